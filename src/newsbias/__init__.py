"""newsbias: LoRA fine-tuning and honest evaluation of small LLMs for news political-leaning classification."""

__version__ = "0.1.0"

# how every newsbias process logs, worker processes included
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
