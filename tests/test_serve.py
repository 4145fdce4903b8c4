"""Serving: API schema, every error case, results equal to predict's scoring, micro-batching, loading states."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="serving needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="serving tests need httpx")

from fastapi.testclient import TestClient  # noqa: E402

from newsbias.cli import main  # noqa: E402
from newsbias.config import ServeConfig  # noqa: E402
from newsbias.errors import NewsbiasError  # noqa: E402
from newsbias.records import join_title  # noqa: E402
from newsbias.serve import MicroBatcher, ShuttingDown, create_app, load_model, run_server  # noqa: E402

from conftest import make_planted_rows  # noqa: E402
from serve_fixtures import RunningServer, adapter_for  # noqa: E402

LABELS = ["left", "center", "right"]


@pytest.fixture(scope="module")
def lm_adapter(tmp_path_factory, tiny_qwen_dir, planted_data_dir) -> Path:
    return adapter_for("lm", tmp_path_factory, tiny_qwen_dir, planted_data_dir)


@pytest.fixture(scope="module")
def predictor(lm_adapter):
    return load_model(ServeConfig(adapter=str(lm_adapter), device="cpu"))


@pytest.fixture(scope="module")
def cfg(lm_adapter) -> ServeConfig:
    return ServeConfig(adapter=str(lm_adapter), max_batch=8, max_wait_ms=20, max_body_bytes=20_000,
                       max_article_chars=2_000, max_texts=10)


@pytest.fixture(scope="module")
def client(cfg, predictor):
    with TestClient(create_app(cfg, predictor=predictor), raise_server_exceptions=False) as c:
        yield c


def texts(n: int, seed: int = 7) -> list[str]:
    return [r["input"] for r in make_planted_rows(n, seed=seed)]


def assert_matches(results: list[dict], predictor, inputs: list[str]) -> None:
    """Each answer equals score_batch on the same text alone (and predict's record)."""
    ref = np.vstack([predictor.predict_proba([t]) for t in inputs])
    recs = predictor.classify(inputs)
    for r, p, rec in zip(results, ref, recs):
        assert r["pred"] == LABELS[int(np.argmax(p))] == rec["pred"]
        assert list(r["probs"]) == LABELS
        np.testing.assert_allclose([r["probs"][l] for l in LABELS], p, atol=2e-5)


def test_classify_texts_equals_predict(client, predictor, lm_adapter):
    inputs = texts(6)
    r = client.post("/v1/classify", json={"texts": inputs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["id"] for x in body["results"]] == [str(i) for i in range(6)]
    assert body["model"] == lm_adapter.name and body["adapter"] == lm_adapter.name
    assert all(x["model"] == lm_adapter.name and x["adapter"] == lm_adapter.name for x in body["results"])
    assert body["batch_texts"] >= 6 and body["elapsed_ms"] > 0
    assert_matches(body["results"], predictor, inputs)


def test_classify_articles_ids_and_title(client, predictor):
    arts = [{"id": "a", "title": "Budget talks", "text": texts(1)[0]}, {"id": "b", "text": texts(2)[1]},
            {"id": "c", "text": "no id here", "source": "Reuters", "url": "https://reuters.com/x", "date": "2020"}]
    r = client.post("/v1/classify", json={"articles": arts})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [(x["id"], x["outlet"]) for x in res] == [("a", None), ("b", None), ("c", "Reuters")]
    r = client.post("/v1/classify", json={"articles": [{"text": "one"}, {"text": "two", "outlet": "x.com"}]})
    assert [(x["id"], x["outlet"]) for x in r.json()["results"]] == [("0", None), ("1", "x.com")]  # positions
    r = client.post("/v1/classify", json={"articles": [{"id": 7, "text": "x"}, {"id": "7", "text": "x"}]})
    assert r.status_code == 200 and [x["id"] for x in r.json()["results"]] == ["7", "7"]  # as predict writes ids
    # the fixture's model was trained on bodies alone (no prep titles): a title is not read, as in predict
    assert not predictor.settings.prepend_title
    assert_matches(res, predictor, [arts[0]["text"], arts[1]["text"], "no id here"])


def test_health_model_docs_and_page(client, lm_adapter, predictor):
    h = client.get("/health")
    assert h.status_code == 200 and h.json()["model_loaded"] is True and h.json()["status"] == "ok"
    m = client.get("/v1/model").json()
    settings = predictor.settings
    assert m["adapter"] == str(lm_adapter) and m["base_model"] == settings.base_model
    assert m["labels"] == LABELS and m["head"] == "lm" and m["max_length"] == 64 and m["reads_title"] is False and m["trained"] is True
    assert m["best_val"]["metric"] == "val_macro_f1" and "val_macro_f1" in m["best_val"]
    assert m["temperature"] == settings.temperature  # what its probabilities are divided by
    assert m["serving"]["max_batch"] == 8
    assert m["device"] == str(predictor.device) and m["dtype"] == predictor.precision == "float32"
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/v1/classify" in schema["paths"] and "ClassifyRequest" in json.dumps(schema)
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="text"' in page.text and "/v1/classify" in page.text and "<script src" not in page.text


def test_answers_say_how_much_of_the_article_was_read(client, predictor):
    short, long = texts(1)[0], " ".join(texts(10))  # 64 tokens of prompt hold ~40 of the article
    r = client.post("/v1/classify", json={"texts": [short, long]})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    budget = client.get("/v1/model").json()["max_article_tokens"]
    assert budget == predictor.builder.article_budget
    assert first["truncated"] is False
    assert first["tokens_read"] == len(predictor.tokenizer.encode(short, add_special_tokens=False))
    assert second["truncated"] is True and second["tokens_read"] == budget


def test_page_is_the_template_with_the_uncertainty_threshold(client):
    from newsbias.serve import UNCERTAIN_BELOW

    page = client.get("/").text
    assert "{{" not in page and "{%" not in page
    assert f"const UNCERTAIN_BELOW = {UNCERTAIN_BELOW};" in page
    assert f"below {100 * UNCERTAIN_BELOW:.0f}%" in page  # the threshold is said on the page
    assert "the confidence AUROC\nof its evaluation report says how well" in page  # and what it does not mean
    assert "Its validation macro-F1: '" in page and "m.best_val.val_macro_f1.toFixed(3)" in page
    for part in ('id="uncertain"', 'id="reading"', "tokens_read", "function explain(status, body)",
                 "The model is still loading", "Could not reach the newsbias server"):
        assert part in page


def test_docs_load_their_assets_from_this_server(client):
    pytest.importorskip("fastapi_offline", reason="offline docs need fastapi-offline (serve extra)")
    import re

    for route in ("/docs", "/redoc"):
        html = client.get(route).text
        assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
        assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', html)
        assert assets, html
        for asset in assets:
            r = client.get(asset)
            assert r.status_code == 200 and len(r.content) > 10_000, asset


@pytest.mark.parametrize("body, field", [
    ({}, "give exactly one of"),
    ({"texts": ["a"], "articles": [{"text": "b"}]}, "give exactly one of"),
    ({"texts": []}, "texts"),
    ({"texts": ["fine", "   "]}, "texts.1"),
    ({"texts": "not a list"}, "texts"),
    ({"texts": [3]}, "texts.0"),
    ({"articles": [{"title": "no text"}]}, "articles.0.text"),
    ({"articles": [{"text": ""}]}, "articles.0.text"),
    ({"articles": [{"text": "x", "uri": "http://x"}]}, "articles.0.uri"),  # a typo is not ignored
    ({"articles": [{"id": "a", "text": "x"}, {"text": "y"}]}, "give an id to every article or to none (1 of 2"),
    ({"articles": [{"id": True, "text": "x"}]}, "articles.0.id"),
    ({"articles": [{"id": 1.5, "text": "x"}]}, "articles.0.id"),
    ({"articles": [{"id": "x" * 513, "text": "x"}]}, "articles.0.id"),
    ({"text": "wrong key"}, "text"),
])
def test_schema_errors_are_422_naming_the_field(client, body, field):
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]
    assert "Traceback" not in r.text


def test_malformed_json_is_422(client):
    r = client.post("/v1/classify", content=b'{"texts": ["a"', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]
    r = client.post("/v1/classify", content=b"texts=a", headers={"content-type": "text/plain"})
    assert r.status_code == 422


@pytest.mark.parametrize("bad, kind", [(1.5, "float"), (True, "bool"), ([1], "list"), ({"a": 1}, "dict")])
def test_an_id_of_the_wrong_type_is_one_plain_message(client, bad, kind):
    r = client.post("/v1/classify", json={"articles": [{"id": bad, "text": "x y"}]})
    assert r.status_code == 422 and r.json()["error"] == f"articles.0.id: must be a string or an integer, got {kind}"


def test_empty_text_message(client):
    r = client.post("/v1/classify", json={"texts": [" \n "]})
    assert r.status_code == 422 and r.json()["error"] == "texts.0: text is empty"


def test_size_limits_are_413(client):
    r = client.post("/v1/classify", json={"texts": ["word " * 5000]})  # > max_body_bytes (declared length)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]

    def chunks():  # no content-length: the streamed size is counted
        yield b'{"texts": ["'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"]}'

    r = client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/v1/classify", json={"articles": [{"title": "t", "text": "y" * 2500}]})
    assert r.status_code == 413 and "articles.0" in r.json()["error"] and "max_article_chars" in r.json()["error"]
    words = ("news " * 400)[:2_000]  # exactly serve.max_article_chars: allowed
    assert len(words) == 2_000 and client.post("/v1/classify", json={"texts": [words]}).status_code == 200
    assert client.post("/v1/classify", json={"texts": [words + "s"]}).status_code == 413
    r = client.post("/v1/classify", json={"texts": ["a"] * 11})
    assert r.status_code == 413 and "max_texts" in r.json()["error"]


def test_unknown_route_and_method(client):
    assert client.get("/v1/nope").status_code == 404
    r = client.get("/v1/classify")
    assert r.status_code == 405 and "error" in r.json()


def test_inference_failure_is_500_without_traceback(cfg, predictor, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(predictor, "classify", boom)
    with TestClient(create_app(cfg, predictor=predictor), raise_server_exceptions=False) as c:
        r = c.post("/v1/classify", json={"texts": ["a b c"]})
        assert r.status_code == 500
        assert "secret" not in r.text and "Traceback" not in r.text and r.json()["error"]
        monkeypatch.undo()
        assert c.post("/v1/classify", json={"texts": ["a b c"]}).status_code == 200  # the worker survived


def test_a_request_cut_off_by_shutdown_is_503_json(cfg, predictor, monkeypatch):
    def stopping(*a, **k):
        raise ShuttingDown("server shutting down; retry on another instance")

    monkeypatch.setattr(predictor, "classify", stopping)
    with TestClient(create_app(cfg, predictor=predictor), raise_server_exceptions=False) as c:
        r = c.post("/v1/classify", json={"texts": ["a b c"]})
    assert r.status_code == 503 and r.json()["error"].startswith("server shutting down")


def test_shutdown_lets_requests_received_finish(cfg, monkeypatch):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    monkeypatch.setattr("newsbias.serve.check_port", lambda *a: None)
    run_server(cfg.model_copy(update={"shutdown_timeout_s": 42.0}), predictor=object())
    assert seen["timeout_graceful_shutdown"] == 42.0
    assert ServeConfig(adapter="x").shutdown_timeout_s == 60.0


def test_a_prep_record_is_scored_as_it_is(client, predictor, planted_data_dir):
    record = json.loads((planted_data_dir / "test.jsonl").read_text().splitlines()[0])
    record.update(instruction="Classify.", outlet="vox.com", source="Vox", url="https://vox.com/a", date="2020-01-01")
    r = client.post("/v1/classify", json={"articles": [record]})
    assert r.status_code == 200, r.text
    got = r.json()["results"][0]
    assert got["id"] == str(record["id"]) and got["outlet"] == "vox.com"
    assert got["probs"] == pytest.approx(dict(zip(predictor.labels, predictor.predict_proba([record["input"]])[0])),
                                         abs=1e-6)


def test_model_that_failed_to_load_is_503(cfg):
    def bad(_):
        raise NewsbiasError("adapter not found: /nope")

    with TestClient(create_app(cfg, loader=bad), raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 10
        while c.get("/health").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        h = c.get("/health")
        assert h.status_code == 503 and h.json()["model_loaded"] is False and "/nope" in h.json()["error"]
        r = c.post("/v1/classify", json={"texts": ["a"]})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]
        assert c.get("/v1/model").status_code == 503
        assert c.get("/").status_code == 200  # the page still loads and shows the error on submit


def test_loading_model_is_503_then_ready(cfg, predictor):
    release = threading.Event()

    def slow(_):
        release.wait(10)
        return predictor

    with TestClient(create_app(cfg, loader=slow)) as c:
        assert c.get("/health").json()["status"] == "loading"
        r = c.post("/v1/classify", json={"texts": ["a"]})
        assert r.status_code == 503 and "loading" in r.json()["error"]
        release.set()
        deadline = time.monotonic() + 10
        while c.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.post("/v1/classify", json={"texts": ["a"]}).status_code == 200


def test_zero_shot_base_model_is_servable(tiny_qwen_dir):
    """No adapter: the real loader builds default settings (head lm) at startup."""
    cfg = ServeConfig(model=str(tiny_qwen_dir), device="cpu", prompt={"max_length": 64}, threads=1)
    before = torch.get_num_threads()
    with TestClient(create_app(cfg)) as c:
        assert torch.get_num_threads() == 1  # serve.threads applied
        deadline = time.monotonic() + 30
        while c.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/health").status_code == 200, c.get("/health").json()
        m = c.get("/v1/model").json()
        assert m["adapter"] is None and m["head"] == "lm" and m["base_model"] == str(tiny_qwen_dir)
        assert m["trained"] is False  # the page says "zero-shot"
        r = c.post("/v1/classify", json={"texts": texts(2)})
        assert r.status_code == 200 and r.json()["results"][0]["adapter"] is None
        assert r.json()["model"] == tiny_qwen_dir.name
    torch.set_num_threads(before)


def test_batcher_batches_and_never_blocks_the_loop():
    calls: list[list[str]] = []

    def score(batch: list[str]) -> list[str]:
        calls.append(list(batch))
        time.sleep(0.05)  # blocking "inference": must run off the event loop
        return [t.upper() for t in batch]

    async def scenario():
        b = MicroBatcher(score, max_batch=8, max_wait_ms=10)
        b.start()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        t = asyncio.create_task(ticker())
        outs = await asyncio.gather(*(b.submit([f"t{i}", f"u{i}"]) for i in range(25)))
        t.cancel()
        await b.stop()
        return outs, ticks

    outs, ticks = asyncio.run(scenario())
    assert [o[0] for o in outs] == [[f"T{i}", f"U{i}"] for i in range(25)]
    assert sum(len(c) for c in calls) == 50 and max(len(c) for c in calls) <= 8
    assert len(calls) <= 10  # 50 texts in batches of up to 8 (pairs): not one call per request
    assert ticks >= 10, "the event loop was blocked during inference"


def test_many_simultaneous_requests_none_lost(cfg, predictor):
    """50 concurrent clients against a real uvicorn server: every answer is its own text's."""
    import httpx

    app = create_app(cfg, predictor=predictor)
    inputs = texts(50, seed=11)

    async def fire(url: str):
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            return await asyncio.gather(*(c.post("/v1/classify", json={"articles": [{"id": f"q{i}", "text": t}]})
                                          for i, t in enumerate(inputs)))

    with RunningServer(app) as srv:
        responses = asyncio.run(fire(srv.url))
    assert [r.status_code for r in responses] == [200] * 50
    results = [r.json()["results"][0] for r in responses]
    assert [x["id"] for x in results] == [f"q{i}" for i in range(50)]
    assert_matches(results, predictor, inputs)
    batches = app.state.newsbias.batcher.batches
    assert sum(batches) == 50 and max(batches) > 1 and max(batches) <= cfg.max_batch
    assert max(r.json()["batch_texts"] for r in responses) > 1


def test_cli_serve_errors(capsys, tmp_path):
    assert main(["serve"]) == 2
    assert "nothing to serve" in capsys.readouterr().err
    assert main(["serve", "--adapter", str(tmp_path / "missing")]) == 2
    assert "adapter not found" in capsys.readouterr().err
    assert main(["serve", "--adapter", str(tmp_path), "serve.max_batch=0"]) == 2
    assert "serve.max_batch" in capsys.readouterr().err


@pytest.mark.slow  # a server process of its own; the app itself is tested in-process above
def test_cli_serve_runs_a_real_server(tiny_qwen_dir):
    """`newsbias serve` in a subprocess: binds 127.0.0.1, answers, stops on SIGTERM."""
    import subprocess
    import sys

    import httpx

    from serve_fixtures import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "newsbias.cli", "serve", "--model", str(tiny_qwen_dir),
                             "--port", str(port), "--max-batch", "4", "serve.log_level=warning",
                             "serve.prompt.max_length=64"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, health = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert health is not None and health.status_code == 200, proc.stderr.read() if proc.poll() is not None else ""
        r = httpx.post(f"http://127.0.0.1:{port}/v1/classify", json={"texts": ["a b c"]}, timeout=10)
        assert r.status_code == 200 and r.json()["results"][0]["pred"] in LABELS
        assert httpx.get(f"http://127.0.0.1:{port}/v1/model").json()["serving"]["max_batch"] == 4
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode in (0, -15)  # uvicorn shuts down gracefully, then re-raises the signal
    assert f"http://127.0.0.1:{port}/" in out


def test_example_config_validates():
    from newsbias.config import load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "serve.yaml", ["serve.port=9000"])
    assert cfg.serve.port == 9000 and cfg.serve.max_batch == 16 and cfg.export.base_model_id == "Qwen/Qwen3-0.6B"


@pytest.mark.parametrize("raw,field", [
    (b'{"texts": ["ok", "\\ud83d"]}', "texts.1"),                      # a lone surrogate
    (b'{"texts": ["a\\u0000b"]}', "texts.0"),                           # NUL
    (b'{"texts": ["\\u200b\\u200d \\ufeff"]}', "texts.0"),              # only invisible characters
    (b'{"texts": ["ok", "\\ufffd\\ufffd \\u0001"]}', "texts.1"),          # only what a failed decode leaves
    (b'{"articles": [{"id": "\\udc00", "text": "fine"}]}', "articles.0.id"),
    (b'{"articles": [{"id": 1' + b'0' * 600 + b', "text": "fine"}]}', "articles.0.id"),
    (b'{"articles": [{"title": "\\ud800", "text": "fine"}]}', "articles.0.title"),
])
def test_invalid_text_is_422_naming_the_field(client, raw, field):
    r = client.post("/v1/classify", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"].startswith(field) and body["detail"][0]["loc"][0] == "body"


def test_undecodable_bodies_are_422_not_400(client):
    import gzip

    cases = [(b'{"texts": ["caf\xe9"]}', {}),                                     # Latin-1, not UTF-8
             (gzip.compress(b'{"texts": ["a"]}'), {"content-encoding": "gzip"}),
             (b'{"texts": ' + b"[" * 5000 + b"]" * 5000 + b"}", {}),                # nested past any sane depth
             (b'{"texts": ["a"', {})]                                               # truncated
    for raw, headers in cases:
        r = client.post("/v1/classify", content=raw, headers={"content-type": "application/json", **headers})
        assert r.status_code == 422, (raw[:40], r.status_code, r.text[:200])
        if raw.startswith(b'{"texts": [[') and r.json()["detail"][0]["field"] == "texts.0":
            continue  # Python 3.12's json parses this depth; the nested list is then refused as a text
        assert r.json()["detail"][0]["field"] == "body" and "not valid JSON" in r.json()["error"]
    r = client.post("/v1/classify", content=b"texts=a", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422 and "content-type application/json" in r.json()["error"]
    r = client.post("/v1/classify", content=b'{"texts": ["a b c"]}', headers={"content-type": ""})
    assert r.status_code == 422 and r.json()["error"].endswith("(the request had none)")


def test_one_failing_request_does_not_fail_its_batch():
    def score(batch: list[str]) -> list[str]:
        if "BAD" in batch:
            raise ValueError("cannot score BAD")
        return [t.lower() for t in batch]

    async def scenario():
        b = MicroBatcher(score, max_batch=16, max_wait_ms=50)
        b.start()
        outs = await asyncio.gather(*(b.submit(t) for t in (["A", "B"], ["BAD"], ["C"])), return_exceptions=True)
        await b.stop()
        return outs

    good1, bad, good2 = asyncio.run(scenario())
    assert good1[0] == ["a", "b"] and good2[0] == ["c"]
    assert isinstance(bad, ValueError)


def test_stop_fails_the_requests_of_the_batch_being_scored():
    started, release = threading.Event(), threading.Event()

    def score(batch: list[str]) -> list[str]:
        started.set()
        release.wait(10)
        return batch

    async def scenario():
        b = MicroBatcher(score, max_batch=4, max_wait_ms=1)
        b.start()
        running = asyncio.ensure_future(b.submit(["a"]))
        await asyncio.to_thread(started.wait, 10)
        queued = asyncio.ensure_future(b.submit(["b"]))
        await asyncio.sleep(0.01)
        await b.stop()
        release.set()
        return await asyncio.wait_for(asyncio.gather(running, queued, return_exceptions=True), 5)

    outs = asyncio.run(scenario())
    assert all(isinstance(o, ShuttingDown) for o in outs) and str(outs[0]).startswith("server shutting down")


def test_explain_answers_each_words_effect_as_the_explain_stage_does(client, predictor):
    from newsbias.explain import explain_article
    from newsbias.records import Article

    body = {"title": "Senate vote", "text": "WASHINGTON (Reuters) - The senate passed the progressive bill.",
            "source": "Reuters", "outlet": "reuters.com", "top_k": 3}
    r = client.post("/v1/explain", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    text = body["text"]  # the model was trained without titles: the title is not read
    ref = explain_article(predictor, Article(id="0", text=text, source="Reuters", outlet="reuters.com"))
    assert got["text"] == text and got["pred"] == ref["pred"] and not got["truncated"]
    assert [w["text"] for w in got["words"]] == text.split()
    assert all(got["text"][w["start"]:w["end"]] == w["text"] for w in got["words"])
    for w, u in zip(got["words"], ref["units"]):
        np.testing.assert_allclose([w["effect"][l] for l in LABELS], [u["effect"][l] for l in LABELS], atol=2e-5)
    assert {w["text"]: w["cue"] for w in got["words"] if w["cue"]} == {
        "WASHINGTON": "dateline", "(Reuters)": "name", "-": "dateline"}
    assert got["without_cues"]["pred"] in LABELS and len(got["top"]) <= 3
    assert [w["effect"][got["pred"]] for w in got["top"]] == sorted((w["effect"][got["pred"]] for w in got["top"]),
                                                                   reverse=True)
    assert client.post("/v1/explain", json={"text": "nothing to flag here"}).json()["without_cues"] is None


def test_explain_refuses_bad_requests_clearly(client):
    r = client.post("/v1/explain", json={"text": " "})
    assert r.status_code == 422 and r.json()["error"] == "text: text is empty"
    r = client.post("/v1/explain", json={"text": "y" * 2500})
    assert r.status_code == 413 and "max_article_chars" in r.json()["error"]
    r = client.post("/v1/explain", json={"text": "ok", "span": 0})
    assert r.status_code == 422 and "span" in r.json()["error"]
    assert "Which words decided it?" in client.get("/").text


def test_a_server_scoring_several_windows_says_so_and_refuses_a_one_window_explanation(cfg, predictor):
    wide = cfg.model_copy(update={"windows": 3, "pool": "max", "max_article_chars": 10_000})
    # the planted words of each label sit in different stretches: each window reads another article
    text = " ".join(["progressive"] * 120 + ["moderate"] * 120 + ["traditional"] * 120)
    assert not np.allclose(predictor.predict_proba([text], windows=3, pool="max"), predictor.predict_proba([text]),
                           atol=1e-4)  # so a server that read one window would answer otherwise
    with TestClient(create_app(wide, predictor=predictor), raise_server_exceptions=False) as c:
        assert c.get("/v1/model").json()["serving"]["windows"] == 3
        r = c.post("/v1/classify", json={"texts": [text]})
        assert r.status_code == 200, r.text
        got = r.json()["results"][0]
        assert got["probs"] == pytest.approx(dict(zip(predictor.labels, predictor.predict_proba(
            [text], windows=3, pool="max")[0].tolist())), abs=1e-5)
        assert got["tokens_read"] == predictor.reading([text], windows=3)[0]["tokens_read"] > \
            predictor.reading([text])[0]["tokens_read"]
        r = c.post("/v1/explain", json={"text": text})
        assert r.status_code == 409 and "serve.windows=1" in r.json()["error"]


def test_a_title_is_read_as_the_training_texts_were_in_predict_serve_and_explain(tmp_path, tiny_qwen_dir, capsys,
                                                                                  monkeypatch):
    """A model trained on prep output with titles prepended records it; predict, serve, explain and calibrate all join a
    given title to its text, and give the same answer for the same article."""
    from newsbias.explain import explain_article
    from newsbias.records import Article

    rows = make_planted_rows(90, seed=3)
    src = tmp_path / "raw.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "title": f"Headline {i % 5}", "text": r["input"],
                                       "label": r["output"], "url": f"https://site{i % 9}.com/{i}"}) + "\n"
                           for i, r in enumerate(rows)))
    assert main(["prep", "-q", "--input", str(src), "--out", str(tmp_path / "data"),
                 "prep.clean.prepend_title=true", "prep.clean.min_chars=10"]) == 0
    assert main(["train", "-q", "--model", str(tiny_qwen_dir), "--data", str(tmp_path / "data"), "--out",
                 str(tmp_path / "run"), "--max-steps", "1", "train.prompt.max_length=64"]) == 0
    assert json.loads((tmp_path / "run" / "newsbias.json").read_text())["prepend_title"] is True
    clf = load_model(ServeConfig(adapter=str(tmp_path / "run"), device="cpu"))
    arts = [{"id": "a", "title": "Budget talks collapse", "text": texts(1)[0]}, {"id": "b", "text": texts(2)[1]}]
    assert clf.article_text(arts[0]["title"], arts[0]["text"]) == join_title(arts[0]["title"], arts[0]["text"])
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(a) + "\n" for a in arts))
    assert main(["predict", "-q", "--adapter", str(tmp_path / "run"), "--input", str(tmp_path / "in.jsonl"),
                 "--out", str(tmp_path / "p.jsonl")]) == 0
    predicted = [json.loads(line)["probs"] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    with TestClient(create_app(ServeConfig(adapter=str(tmp_path / "run")), predictor=clf)) as c:
        served = c.post("/v1/classify", json={"articles": arts}).json()["results"]
        explained = c.post("/v1/explain", json={"title": arts[0]["title"], "text": arts[0]["text"]}).json()
    for p, s in zip(predicted, served):
        np.testing.assert_allclose([p[l] for l in LABELS], [s["probs"][l] for l in LABELS], atol=2e-5)
    assert_matches(served, clf, [join_title(arts[0]["title"], arts[0]["text"]), arts[1]["text"]])
    assert explained["text"] == join_title(arts[0]["title"], arts[0]["text"])
    ref = explain_article(clf, Article(id="0", text=arts[0]["text"], title=arts[0]["title"]))
    assert explained["pred"] == ref["pred"] == served[0]["pred"]
    # calibrate fits the temperature on the texts the model will score: titled, here
    from newsbias.classifier import Classifier

    labelled = [{**a, "label": lab} for a, lab in zip(arts, ["left", "right"])]
    (tmp_path / "lab.jsonl").write_text("".join(json.dumps(a) + "\n" for a in labelled))
    seen, fit = [], Classifier.calibrate
    monkeypatch.setattr(Classifier, "calibrate", lambda self, t, *a: seen.extend(t) or fit(self, t, *a))
    assert main(["calibrate", "--adapter", str(tmp_path / "run"), "--data", str(tmp_path / "lab.jsonl")]) == 0
    assert seen == [join_title(arts[0]["title"], arts[0]["text"]), arts[1]["text"]]


def test_serve_names_a_busy_port_before_loading_any_model(tmp_path, capsys):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        # the adapter does not exist: had serve loaded it first, that would be the error
        assert main(["serve", "--adapter", str(tmp_path / "nope"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "pick another with --port" in err


def test_a_merged_export_served_as_a_model_says_it_was_trained(lm_adapter, tmp_path):
    from newsbias.classifier import Classifier

    assert main(["export", "-q", "--adapter", str(lm_adapter), "--out", str(tmp_path / "m"), "--merge"]) == 0
    cfg = ServeConfig(model=str(tmp_path / "m"), device="cpu")
    with TestClient(create_app(cfg, predictor=Classifier.load(str(tmp_path / "m"), device="cpu"))) as c:
        m = c.get("/v1/model").json()
    assert m["adapter"] is None and m["trained"] is True and m["merged"] is True


def test_a_server_on_a_loopback_address_answers_only_requests_naming_this_machine(cfg, predictor):
    from newsbias.serve import local_only

    app = create_app(cfg, predictor=predictor)
    local_only(app, "127.0.0.1")
    with TestClient(app, base_url="http://localhost") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"host": "attacker.example:8000"}).status_code == 400
    open_app = create_app(cfg, predictor=predictor)
    local_only(open_app, "0.0.0.0")  # served to the network on purpose: any name reaches it
    with TestClient(open_app, base_url="http://server.example") as c:
        assert c.get("/health").status_code == 200


def test_explanations_queue_only_so_deep(cfg, predictor, monkeypatch):
    import threading
    import time

    import newsbias.explain as explain_mod

    release, real = threading.Event(), explain_mod.explain_article

    def slow(*args, **kwargs):
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(explain_mod, "explain_article", slow)
    app = create_app(cfg.model_copy(update={"max_explain_waiting": 1}), predictor=predictor)
    with TestClient(app, raise_server_exceptions=False) as c:
        answers: list[int] = []
        workers = [threading.Thread(target=lambda: answers.append(c.post("/v1/explain", json={"text": "a b c"})
                                                                  .status_code)) for _ in range(2)]
        for w in workers:  # one running, one waiting
            w.start()
            time.sleep(0.3)
        r = c.post("/v1/explain", json={"text": "a b c"})
        assert r.status_code == 503 and "serve.max_explain_waiting" in r.json()["error"]
        release.set()
        for w in workers:
            w.join(30)
        assert answers == [200, 200]


def test_the_server_limits_its_open_connections(monkeypatch, cfg, predictor):
    import uvicorn

    from newsbias import serve as serve_mod

    seen = {}
    monkeypatch.setattr(serve_mod, "check_port", lambda host, port: None)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    serve_mod.run_server(cfg.model_copy(update={"max_connections": 7}), predictor=predictor)
    assert seen["limit_concurrency"] == 7


def test_serve_without_its_packages_names_the_extra_before_loading_a_model(monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve", "--model", str(tmp_path / "no-model-needed")]) == 2
    assert "newsbias serve needs uvicorn: pip install 'newsbias[serve]'" in capsys.readouterr().err


def test_model_info_says_whether_the_prompt_uses_the_chat_template_a_zero_shot_base_included(tiny_qwen_dir):
    from newsbias.classifier import Classifier

    clf = Classifier.load(str(tiny_qwen_dir), device="cpu")  # chat_template: auto, and the tokenizer has one
    assert clf.builder.uses_chat_template and not clf.settings.uses_chat_template
    with TestClient(create_app(ServeConfig(model=str(tiny_qwen_dir)), predictor=clf)) as c:
        assert c.get("/v1/model").json()["chat_template"] is True
