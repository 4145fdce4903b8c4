"""Tiny trained adapters for the serving / export tests (both heads), trained once per session.

Imported by test modules (``from serve_fixtures import adapter_for``); the cache makes the
fixtures of several modules share one training run per head.
"""

from __future__ import annotations

from pathlib import Path

_CACHE: dict[str, Path] = {}


def adapter_for(head: str, tmp_path_factory, base_dir: Path, data_dir: Path) -> Path:
    """A few optimizer steps of LoRA on the planted data: a real adapter dir (newsbias.json, manifest)."""
    if head in _CACHE:
        return _CACHE[head]
    from newsbias.config import TrainConfig
    from newsbias.train import train

    out = tmp_path_factory.mktemp(f"serve_{head}_adapter")
    prompt = {"max_length": 64, "chat_template": "off"} if head == "lm" else {"max_length": 64}
    train(TrainConfig.model_validate({
        "model": {"name_or_path": str(base_dir), "head": head},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "prompt": prompt,
        "data": {"path": str(data_dir), "val_limit": 12},
        "optim": {"lr": 5e-3, "max_steps": 3, "batch_size": 8, "grad_accum": 1, "warmup_ratio": 0.0},
        "eval": {"every_steps": 3, "patience": None, "batch_size": 12}, "out_dir": str(out), "progress": False}))
    _CACHE[head] = out
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """A real uvicorn server for ``app`` on 127.0.0.1 in a background thread (context manager)."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = None

    def __enter__(self) -> "RunningServer":
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
