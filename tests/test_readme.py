"""A newcomer's walk-through: after the demo, every README command that applies to it runs as written.

The demo is tests/demo_slice.py's run (scripts/demo.sh, which `make demo` runs, on a small AllSides
slice); `make demo` itself is that fixture. The rule for which README commands apply, in README order:

- in a ```bash block, a command (a line with its ``\\`` continuations) whose program is ``newsbias`` or
  ``.venv/bin/newsbias`` and which names a path under ``runs/demo/``;
- a ``curl`` command after such a ``newsbias serve`` in the same block: it is sent to that server, which is
  started, waited for (``/health``) and stopped when the block ends;
- a ```python block that names a path under ``runs/demo/``.

``docker`` and ``make`` commands and commands on other runs (``runs/qwen3-0.6b``) do not apply. Each
command runs with ``bash -c`` from an empty directory that links ``configs/`` (so relative outputs such
as ``runs/cv`` or ``merged.jsonl`` stay out of the repository), with ``runs/demo`` rewritten to the demo's
output, ``.venv/bin/`` and a bare ``newsbias`` to this test's venv, and port 8000 to a free port. Each
must exit 0 (a curl answer must also hold one classified or explained article; the server, stopped with SIGTERM,
must shut down within 30 s).

Then: the exported model card's test macro-F1 (read with huggingface_hub's ``ModelCard``) equals
``newsbias evaluate``'s, and the card's snippet runs; peft loads the demo's LoRA adapter (GGUF base) and
transformers the demo's encoder (a full fine-tune), each scoring as newsbias does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from demo_slice import ROOT, DemoRun, demo_slice
from serve_fixtures import free_port

pytestmark = pytest.mark.slow

DEMO_PATH = re.compile(r"(?<![\w/.-])runs/demo(?=/|\s|$)")
LABELS = ["left", "center", "right"]


def commands(block: str) -> list[str]:
    """The commands of a shell block: one per line, ``\\`` continuations joined."""
    return [c.strip() for c in re.sub(r"\\\n", " ", block).splitlines() if c.strip()]


def program(command: str) -> str:
    words = shlex.split(command, comments=True)
    return Path(words[0]).name if words else ""


def walkthrough(readme: str) -> list[tuple[str, str]]:
    """The README steps that apply to the demo (see the module docstring): ``(kind, text)``, in README order.

    ``kind`` is ``bash``, ``serve`` (a server to start), ``curl`` (sent to it), ``end`` (stop it) or ``python``.
    """
    steps = []
    for lang, body in re.findall(r"^```(bash|python)\n(.*?)^```", readme, flags=re.M | re.S):
        if lang == "python":
            steps += [("python", body)] if DEMO_PATH.search(body) else []
            continue
        server = None
        for cmd in commands(body):
            if program(cmd) == "newsbias" and DEMO_PATH.search(cmd):
                serve = shlex.split(cmd)[1] == "serve"
                server = cmd if serve else server
                steps.append(("serve" if serve else "bash", cmd))
            elif program(cmd) == "curl" and server:
                steps.append(("curl", cmd))
        steps += [("end", server)] if server else []
    return steps


def localize(text: str, run: DemoRun, port: int) -> str:
    """A README command or snippet as this test runs it: the demo's output, this venv, a free port."""
    text = DEMO_PATH.sub(str(run.out), text)
    text = re.sub(r"(?<![\w/])\.venv/bin/", f"{run.venv}/bin/", text)
    text = re.sub(r"^newsbias\b", f"{run.venv}/bin/newsbias", text)
    return re.sub(r"\b8000\b", str(port), text)


def wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"newsbias serve exited {proc.returncode} before it was ready:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"newsbias serve not healthy after {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM, as a service manager stops a server: 0 when it shut down within 30 s, else its status.

    uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM counts as 0.
    """
    proc.terminate()
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
    return 0 if rc == -signal.SIGTERM else rc


def classified(body: str) -> bool:
    """True for a /v1/classify answer holding one labelled article, or a /v1/explain answer with its words
    (curl -s exits 0 on HTTP errors too)."""
    try:
        answer = json.loads(body)
        results = answer["results"] if "results" in answer else [answer]
    except (ValueError, KeyError, TypeError):
        return False
    return len(results) == 1 and results[0].get("pred") in LABELS and bool(results[0].get("words", True))


def run_steps(steps: list[tuple[str, str]], run: DemoRun, cwd: Path) -> list[tuple[str, int, str]]:
    """Run the walk-through from ``cwd``; returns ``(README text, exit status, output tail)`` per step."""
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": f"{run.venv}/bin:{os.environ['PATH']}"}
    port, server, done, log = free_port(), None, [], cwd / "serve.log"
    try:
        for kind, text in steps:
            local = localize(text, run, port)
            if kind == "serve":
                with log.open("w") as f:
                    server = subprocess.Popen(["bash", "-c", f"exec {local}"], cwd=cwd, env=env, stdout=f, stderr=f)
                wait_healthy(server, port, log)
            elif kind == "end":
                done.append((f"(stop) {text}", stop(server), log.read_text()[-2000:]))
                port, server = free_port(), None
            else:
                argv = [f"{run.venv}/bin/python", "-c", local] if kind == "python" else ["bash", "-c", local]
                proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
                rc = 1 if kind == "curl" and not proc.returncode and not classified(proc.stdout) else proc.returncode
                done.append((text, rc, (proc.stdout + proc.stderr)[-2000:]))
    finally:
        if server is not None:
            stop(server)
    return done


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoRun:
    return demo_slice(tmp_path_factory)


@pytest.fixture(scope="module")
def walked(demo, tmp_path_factory) -> list[tuple[str, int, str]]:
    cwd = tmp_path_factory.mktemp("newcomer")
    (cwd / "configs").symlink_to(ROOT / "configs")
    steps = walkthrough((ROOT / "README.md").read_text(encoding="utf-8"))
    return run_steps(steps, demo, cwd)


def test_the_rule_finds_the_demo_commands():
    steps = walkthrough((ROOT / "README.md").read_text(encoding="utf-8"))
    subcommands = {shlex.split(t)[1] for k, t in steps if k in ("bash", "serve")}
    assert {"cv", "serve", "evaluate", "export", "predict"} <= subcommands
    assert [k for k, _ in steps].count("curl") >= 1 and [k for k, _ in steps].count("python") >= 1
    assert not any("docker" in t or "qwen3-0.6b/" in t for _, t in steps)


def test_every_demo_command_of_the_readme_runs_as_written(walked):
    failed = [f"{text}\n  -> exit {rc}\n{tail}" for text, rc, tail in walked if rc != 0]
    assert not failed, "\n\n".join(failed)


def card_macro_f1(card_path: Path) -> float:
    from huggingface_hub import ModelCard

    data = ModelCard.load(card_path).data
    [result] = [r for r in data.eval_results if r.metric_name == "macro-F1"]
    assert result.dataset_split == "test"
    return result.metric_value


def test_the_cards_test_metrics_equal_evaluates(demo, walked, tmp_path):
    """The README's export (--eval: evaluate's JSON) and an export with --eval on compare's output."""
    out = demo.out
    evaluated = json.loads((out / "preds" / "lm-tuned.metrics.json").read_text())
    assert card_macro_f1(out / "export" / "README.md") == round(evaluated["macro_f1"], 4)
    nb = f"{demo.venv}/bin/newsbias"
    proc = subprocess.run([nb, "export", "--adapter", str(out / "lm-adapter"), "--out", str(tmp_path / "card"),
                           "--eval", f"lm-tuned={out / 'report'}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert card_macro_f1(tmp_path / "card" / "README.md") == round(evaluated["macro_f1"], 4)


def test_the_exported_cards_snippet_runs(demo, walked):
    """The README's export (merged): its card's Python snippet loads it and prints the three probabilities."""
    from newsbias.export import CARD_PATH

    export = demo.out / "export"
    [snippet] = re.findall(r"^```python\n(.*?)^```", (export / "README.md").read_text(), flags=re.M | re.S)
    proc = subprocess.run([f"{demo.venv}/bin/python", "-c", snippet.replace(CARD_PATH, str(export))],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.match(r"\{'left': .+, 'center': .+, 'right': .+\}$", proc.stdout), proc.stdout


def test_peft_loads_the_demo_lm_adapter_and_scores_like_newsbias(demo):
    """The adapter names its GGUF base as a directory; ``gguf_file`` names the file, and peft passes it on."""
    import numpy as np
    import torch
    from peft import AutoPeftModelForCausalLM, PeftModel

    from newsbias.classifier import Classifier

    adir = demo.out / "lm-adapter"
    base = Path(json.loads((adir / "newsbias.json").read_text())["base_model"])
    config = json.loads((adir / "adapter_config.json").read_text())
    assert base.suffix == ".gguf" and Path(config["base_model_name_or_path"]) == base.parent
    model = AutoPeftModelForCausalLM.from_pretrained(str(adir), gguf_file=base.name).eval()
    assert isinstance(model, PeftModel)

    clf = Classifier.load(str(adir), device="cpu")
    text = "Lawmakers agreed on the budget after a long night of talks in the senate."
    enc = clf.builder.encode(text)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0, enc.answer_pos]
    t = clf.settings.temperature  # the temperature newsbias train fitted on val, as the model card says to apply
    probs = (logits[list(clf.builder.label_token_ids)] / t).softmax(-1).numpy()
    np.testing.assert_allclose(probs, clf.predict_proba([text])[0], atol=1e-4)


def test_transformers_loads_the_demo_encoder_and_scores_like_newsbias(demo):
    """The demo's encoder is a full fine-tune with mean pooling, not an adapter.

    Its directory holds the encoder (transformers' ``AutoModel``, every weight found) and the linear head
    in ``classifier.safetensors``; mean pooling over the two reproduces newsbias's probabilities.
    ``AutoModelForSequenceClassification`` does not apply: its BERT head reads the pooled [CLS] position.
    """
    import numpy as np
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    from newsbias.classifier import Classifier

    edir = demo.out / "encoder"
    settings = json.loads((edir / "newsbias.json").read_text())
    assert not (edir / "adapter_config.json").exists()
    assert (settings["finetune"], settings["pooling"], settings["labels"]) == ("full", "mean", LABELS)
    encoder, info = AutoModel.from_pretrained(str(edir), output_loading_info=True)
    assert not info["missing_keys"]
    head = load_file(str(edir / "classifier.safetensors"))

    clf = Classifier.load(str(edir), device="cpu")
    text = "Lawmakers agreed on the budget after a long night of talks in the senate."
    ids = torch.tensor([clf.builder.encode(text).input_ids])
    with torch.no_grad():
        pooled = encoder.eval()(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.mean(1)
        t = (settings.get("calibration") or {}).get("temperature", 1.0)
        probs = ((pooled @ head["weight"].T + head["bias"]) / t).softmax(-1)[0].numpy()
    np.testing.assert_allclose(probs, clf.predict_proba([text])[0], atol=1e-5)
