"""ONNX export: the graph scores like the torch model (both heads), int8 keeps the matched layers in
fp32, predict and serve load an export like any model source, threads reach ONNX Runtime."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from newsbias.classifier import Classifier  # noqa: E402
from newsbias.cli import main  # noqa: E402
from newsbias.config import ExportConfig  # noqa: E402
from newsbias.errors import NewsbiasError  # noqa: E402
from newsbias.export import run_export  # noqa: E402
from newsbias.onnx_model import ONNX_FILE, OnnxScorer, load_graph, prefix_only_nodes  # noqa: E402

from conftest import make_planted_rows  # noqa: E402
from serve_fixtures import adapter_for  # noqa: E402


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_qwen_dir, tiny_bert_dir, planted_data_dir) -> dict[str, Path]:
    return {"lm": adapter_for("lm", tmp_path_factory, tiny_qwen_dir, planted_data_dir),
            "cls": adapter_for("cls", tmp_path_factory, tiny_bert_dir, planted_data_dir)}


@pytest.fixture(scope="module")
def exports(adapters, tmp_path_factory) -> dict[str, Path]:
    """``newsbias export --format onnx`` of each head's adapter, once per module."""
    return {head: Path(run_export(ExportConfig(adapter=str(a), out=str(tmp_path_factory.mktemp(f"onnx_{head}") / "x"),
                                               format="onnx"))["out"]) for head, a in adapters.items()}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    # planted rows plus a long one: batches mix lengths, so padding and the answer position are exercised
    return [r["input"] for r in make_planted_rows(9, seed=5)] + ["word " * 200]


def intermediate_dims(path: Path) -> set[int]:
    """Every concrete dimension of every tensor the graph's nodes compute (after ONNX shape inference)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    computed = {o for node in model.graph.node for o in node.output}
    return {d.dim_value for v in list(model.graph.value_info) + list(model.graph.output) if v.name in computed
            for d in v.type.tensor_type.shape.dim if d.HasField("dim_value")}


@pytest.mark.parametrize("head", ["lm", "cls"])
def test_onnx_export_scores_like_the_torch_model(adapters, exports, head, texts):
    clf = Classifier.load(str(adapters[head]), device="cpu")
    ref = clf.predict_proba(texts, batch_size=4)
    out = exports[head]
    assert (out / ONNX_FILE).is_file() and not (out / "model.safetensors").exists()
    saved = json.loads((out / "newsbias.json").read_text())
    assert saved["merged"] is True and saved["onnx"]["quantize"] == "none"
    assert saved["onnx"]["check"] == {"n": 2, "same_labels": 1.0, "max_abs_prob_diff": pytest.approx(0, abs=1e-5)}

    exported = Classifier.load(str(out))
    assert isinstance(exported.model, OnnxScorer)
    got = exported.predict_proba(texts, batch_size=4)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert (got.argmax(1) == ref.argmax(1)).all()
    # several windows per article go through the same graph
    np.testing.assert_allclose(exported.predict_proba(texts, windows=3), clf.predict_proba(texts, windows=3),
                               atol=1e-5)
    if head == "lm":  # the label rows of the head only: no tensor in the graph has a vocabulary-sized dimension
        vocab = clf.model.config.vocab_size
        assert vocab not in intermediate_dims(out / ONNX_FILE)
        with pytest.raises(NewsbiasError, match="ONNX export, which scores labels only"):
            exported.generate(texts[:1])
    card = (out / "README.md").read_text()
    assert "library_name: onnx" in card and "ONNX graph" in card and "int8" not in card


def test_lm_graph_takes_the_shared_prefix_apart_and_scores_any_batch(adapters, exports, texts):
    from newsbias.modeling import pad_batch, score_ids
    from newsbias.onnx_model import split_prefix

    clf = Classifier.load(str(adapters["lm"]), device="cpu")
    assert json.loads((exports["lm"] / "newsbias.json").read_text())["onnx"]["shared_prefix"] is True
    scorer = Classifier.load(str(exports["lm"])).model
    assert scorer.inputs == ["prefix_ids", "input_ids", "attention_mask", "answer_pos"]
    assert "share run once per batch" in (exports["lm"] / "README.md").read_text()
    assert "share run once per batch" not in (exports["cls"] / "README.md").read_text()  # an encoder reads both ways
    # both passes read one copy of each weight: the graph holds no more values than the model has parameters
    graph = onnx.load(str(exports["lm"] / ONNX_FILE)).graph
    assert sum(int(np.prod(i.dims)) for i in graph.initializer) <= sum(p.numel() for p in clf.model.parameters())
    encs = [clf.builder.encode(t) for t in texts[:3]]
    b = pad_batch([e.input_ids for e in encs], clf.tokenizer.pad_token_id)
    ids, mask, pos = b["input_ids"], b["attention_mask"], torch.tensor([e.answer_pos for e in encs])
    split = split_prefix(ids, mask, pos)
    assert split["prefix_ids"].shape[1] >= 2 and (split["answer_pos"] == pos - split["prefix_ids"].shape[1]).all()
    ids[1, 0] = (ids[0, 0] + 1) % len(clf.tokenizer)  # now the rows share no first token: scored one by one
    assert split_prefix(ids, mask, pos) is None
    for rows in (slice(0, 3), slice(1, 2)):
        want = score_ids(clf.model, "lm", ids[rows], mask[rows], pos[rows], clf.builder.label_token_ids,
                         share_prefix=False)
        torch.testing.assert_close(scorer.label_logits(ids[rows], mask[rows], pos[rows]), want, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_int8_export_keeps_mlp_outputs_fp32_and_predict_reads_it(adapters, texts, tmp_path, capsys,
                                                                  planted_data_dir):
    out = tmp_path / "q"
    assert main(["export", "--adapter", str(adapters["lm"]), "--out", str(out), "--format", "onnx",
                 "--quantize", "int8", "--check-data", str(planted_data_dir), "export.check_n=10"]) == 0
    info = json.loads((out / "newsbias.json").read_text())["onnx"]
    assert info["check"]["n"] == 10 and 0 <= info["check"]["same_labels"] <= 1
    assert (f"ONNX graph (int8) (labels identical to the torch model's on {info['check']['same_labels']:.1%} of 10 "
            f"articles") in capsys.readouterr().out
    layers = Classifier.load(str(adapters["lm"]), device="cpu").model.config.num_hidden_layers
    assert info["kept_fp32"] == [f"model.model.layers.{i}.mlp.down_proj" for i in range(layers)]
    graph = load_graph(out / ONNX_FILE)
    ops = [n.op_type for n in graph.node]
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops and ops.count("MatMul") >= layers
    # the shared prefix's pass runs once per batch: it stays fp32 whole
    prefix = {n.op_type for n in graph.node if n.name in prefix_only_nodes(graph)}
    assert "MatMul" in prefix and not prefix & {"MatMulInteger", "DynamicQuantizeLinear"}

    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    assert main(["predict", "--model", str(out), "--input", str(inp), "--out", str(tmp_path / "p.jsonl"),
                 "--threads", "1"]) == 0
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [str(i) for i in range(len(texts))]
    probs = np.array([[p["probs"][lab] for lab in ("left", "center", "right")] for p in preds])
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    ref = Classifier.load(str(adapters["lm"]), device="cpu").predict_proba(texts)
    assert np.abs(probs - ref).max() < 0.05  # int8 rounding: close to, not equal to, the fp32 model


def test_int8_block_export_uses_matmulnbits_and_keeps_the_matched_layers(adapters, texts, tmp_path):
    clf = Classifier.load(str(adapters["cls"]), device="cpu")
    ref = clf.predict_proba(texts)
    clf.save(tmp_path / "b", format="onnx", quantize="int8-block", check_texts=texts)
    info = json.loads((tmp_path / "b" / "newsbias.json").read_text())["onnx"]
    layers = clf.model.config.num_hidden_layers
    assert info["quantize"] == "int8-block"
    assert info["kept_fp32"] == sorted(f"model.bert.encoder.layer.{i}.output.dense" for i in range(layers))
    nodes = onnx.load(str(tmp_path / "b" / ONNX_FILE)).graph.node
    blocks = [n for n in nodes if n.op_type == "MatMulNBits"]
    # q, k, v, attention output and intermediate per layer: 5 int8 matrices; the MLP output stays fp32
    assert len(blocks) == 5 * layers and not any(n.op_type == "MatMulInteger" for n in nodes)
    assert {a.name: a.i for a in blocks[0].attribute if a.name in ("bits", "block_size", "accuracy_level")} == \
        {"bits": 8, "block_size": 128, "accuracy_level": 4}
    assert info["check"]["n"] == len(texts) and info["check"]["max_abs_prob_diff"] < 0.02
    int8 = Classifier.load(str(tmp_path / "b"))
    probs = int8.predict_proba(texts)
    assert np.abs(probs - ref).max() < 0.02 and (probs != ref).any()  # rounded, so close but not identical
    from fastapi.testclient import TestClient

    from newsbias.config import ServeConfig
    from newsbias.serve import create_app

    with TestClient(create_app(ServeConfig(model=str(tmp_path / "b")), predictor=int8)) as c:
        assert c.get("/v1/model").json()["quantized"] == "int8-block"  # "dtype" alone said onnx


def test_served_onnx_export_equals_the_adapter(adapters, exports, texts):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from newsbias.config import ServeConfig
    from newsbias.serve import create_app, load_model

    answers = []
    for cfg in (ServeConfig(adapter=str(adapters["cls"]), device="cpu"), ServeConfig(model=str(exports["cls"]))):
        with TestClient(create_app(cfg, predictor=load_model(cfg))) as c:
            answers.append(c.post("/v1/classify", json={"texts": texts[:4]}).json()["results"])
            info = c.get("/v1/model").json()
            assert (info["dtype"], info["quantized"]) == (("onnx", "none") if cfg.model else ("float32", "none"))
    for a, b in zip(*answers):
        assert a["pred"] == b["pred"]
        np.testing.assert_allclose(list(a["probs"].values()), list(b["probs"].values()), atol=1e-5)


def test_threads_and_user_errors(adapters, exports, tmp_path, monkeypatch):
    out = exports["cls"]
    assert OnnxScorer(out / ONNX_FILE, threads=1).session.get_session_options().intra_op_num_threads == 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what predict/serve's --threads sets before loading
        assert Classifier.load(str(out)).model.session.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)

    with pytest.raises(ValueError, match="quantize=int8 needs format=onnx"):
        ExportConfig(adapter=str(adapters["cls"]), out=str(tmp_path / "o"), quantize="int8")
    with pytest.raises(ValueError, match="check_data compares an ONNX graph .* needs format=onnx"):
        ExportConfig(adapter=str(adapters["cls"]), out=str(tmp_path / "o"), check_data=str(tmp_path))
    with pytest.raises(ValueError, match="format=onnx traces the fp32 model"):
        ExportConfig(adapter=str(adapters["cls"]), out=str(tmp_path / "o"), format="onnx", dtype="bfloat16")
    for fmt in ("onnx", "safetensors"):
        with pytest.raises(NewsbiasError, match="is an ONNX export, which cannot be saved again"):
            Classifier.load(str(out)).save(tmp_path / "again", format=fmt)
    assert not (tmp_path / "again").exists()
    (tmp_path / "bad").mkdir()
    for f in out.iterdir():
        (tmp_path / "bad" / f.name).write_bytes(f.read_bytes()[:100] if f.name == ONNX_FILE else f.read_bytes())
    with pytest.raises(NewsbiasError, match="cannot load the ONNX graph .* export it again"):
        Classifier.load(str(tmp_path / "bad"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(NewsbiasError, match=r"need the `onnxruntime` package: pip install 'newsbias\[onnx\]'"):
        Classifier.load(str(out))


def planted_outliers(clf: Classifier, factor: float = 60.0) -> Classifier:
    """``clf`` with one hidden channel a decoder's norms scale ``factor`` times up: the kind of activation
    outlier that per-tensor int8 rounds worst (the model stays a valid model; only its function changes)."""
    with torch.no_grad():
        for layer in clf.model.model.layers:
            layer.input_layernorm.weight[3] *= factor
            layer.post_attention_layernorm.weight[5] *= factor
            layer.mlp.up_proj.weight[7] *= factor
    return clf


def test_smoothing_keeps_the_model_and_brings_int8_closer_to_it(adapters, texts, tmp_path):
    from newsbias.smoothing import activation_ranges, decoder_layers

    clf = planted_outliers(Classifier.load(str(adapters["lm"]), device="cpu"))
    ref = clf.predict_proba(texts)
    layers = decoder_layers(clf.model)
    spread = [(r["q_proj"].max() / r["q_proj"].median()).item() for r in activation_ranges(clf, layers, texts)[0]]
    clf.save(tmp_path / "plain", format="onnx", quantize="int8", keep_fp32=[])

    clf.save(tmp_path / "smooth", format="onnx", quantize="int8", keep_fp32=[], smooth=0.85, calibration_texts=texts)
    np.testing.assert_allclose(clf.predict_proba(texts), ref, atol=1e-5)  # the fp32 function is unchanged
    after = [(r["q_proj"].max() / r["q_proj"].median()).item() for r in activation_ranges(clf, layers, texts)[0]]
    assert all(a < b / 5 for a, b in zip(after, spread)), (spread, after)
    info = json.loads((tmp_path / "smooth" / "newsbias.json").read_text())["onnx"]
    assert info["smooth"]["alpha"] == 0.85 and info["smooth"]["calibration_articles"] == len(texts)
    assert info["smooth"]["layers"] == len(layers) and info["smooth"]["max_abs_prob_diff_fp32"] < 1e-5

    errors = {v: np.abs(Classifier.load(str(tmp_path / v)).predict_proba(texts) - ref).max() for v in ("plain", "smooth")}
    assert errors["smooth"] < errors["plain"] / 3, errors


def test_smoothing_refuses_what_it_cannot_rescale(adapters, texts, tmp_path):
    from newsbias.smoothing import smooth_for_int8

    with pytest.raises(NewsbiasError, match="needs a decoder LM with the Llama / Qwen layer layout"):
        smooth_for_int8(Classifier.load(str(adapters["cls"]), device="cpu"), texts, 0.85)
    clf = Classifier.load(str(adapters["lm"]), device="cpu")
    ref = clf.predict_proba(texts)
    with torch.no_grad():  # a norm that adds 1 to its weight (Gemma's) does not divide as `x * weight` does
        for layer in clf.model.model.layers:
            layer.input_layernorm.forward = (lambda norm: lambda x: norm.__class__.forward(norm, x) + x)(
                layer.input_layernorm)
    shifted = clf.predict_proba(texts)
    with pytest.raises(NewsbiasError, match="changed the fp32 model's probabilities .* left as it was"):
        smooth_for_int8(clf, texts, 0.85)
    np.testing.assert_allclose(clf.predict_proba(texts), shifted, atol=1e-6)
    assert np.abs(shifted - ref).max() > 0
    with pytest.raises(ValueError, match="smooth prepares the weights for int8"):
        ExportConfig(adapter=str(adapters["lm"]), out=str(tmp_path / "o"), format="onnx", smooth=0.85,
                     calibration_data=str(tmp_path))
    with pytest.raises(ValueError, match="smooth needs calibration articles: set --calibration-data"):
        ExportConfig(adapter=str(adapters["lm"]), out=str(tmp_path / "o"), format="onnx", quantize="int8", smooth=0.85)


@pytest.mark.slow
def test_export_cli_smooths_on_the_train_split(adapters, planted_data_dir, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["export", "--adapter", str(adapters["lm"]), "--out", str(out), "--format", "onnx", "--quantize",
                 "int8", "--smooth", "0.85", "--calibration-data", str(planted_data_dir),
                 "export.calibration_n=6"]) == 0
    info = json.loads((out / "newsbias.json").read_text())["onnx"]
    assert info["smooth"]["calibration_articles"] == 6 and info["check"]["n"] == 2
    assert "ONNX graph (int8, smoothed, alpha 0.85)" in capsys.readouterr().out
    card = " ".join((out / "README.md").read_text().split())
    assert ("with int8 weights (`mlp.down_proj` kept in fp32), activation outliers moved into the weights first "
            "(SmoothQuant, alpha 0.85, calibrated on 6 articles)") in card
    assert "On 2 check articles its labels equal the fp32 model's for" in card
