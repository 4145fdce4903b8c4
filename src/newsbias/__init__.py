"""newsbias: LoRA fine-tuning and honest evaluation of small LLMs for news political-leaning classification.

In Python: ``Classifier.load(path)`` for a trained model (``predict``, ``predict_proba``, ``classify``, ``save``), ``load_config``
for a stage's typed settings (the YAML files and ``key=value`` overrides of the command line), ``NewsbiasError`` for
every error meant for a user.
"""

from typing import Any

__version__ = "0.1.0"

# how every newsbias process logs, worker processes included
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

__all__ = ["Classifier", "NewsbiasError", "load_config", "__version__"]

# imported on first use: `import newsbias` (every CLI call, every worker process) stays free of torch
_LAZY = {"Classifier": "classifier", "NewsbiasError": "errors", "load_config": "config"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'newsbias' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
