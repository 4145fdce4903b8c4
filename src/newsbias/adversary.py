"""An outlet adversary for training: features that cannot tell outlets apart (``train.outlet_adversary``).

Every label in the news-leaning datasets is its outlet's rating, so a classifier can score well by
recognising the outlet, which does not carry over to outlets it never saw. Following Baly et al.
(EMNLP 2020, adversarial media adaptation) and Ganin & Lempitsky (ICML 2015, gradient reversal),
a linear head learns to name each training article's outlet from the same vector the label head
reads, and the model is pushed against it (the head's gradient reversed, or towards a head that
cannot choose; :class:`OutletAdversary`): it is trained to keep the label and lose the outlet.

``scope: within_label`` (the default) asks the head to tell apart only outlets of the same leaning.
Across leanings, "which outlet" and "which label" are the same question in this data, and an
adversary there would fight the label loss itself.

The gradient reversal is ours: a three-line autograd function, which no installed library exposes
outside a whole domain-adaptation framework.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import NewsbiasError

IGNORE = -100
"""Outlet id of an article the adversary does not learn from (its outlet is too small or unknown)."""


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by ``-scale`` on the way back."""
    return _ReverseGrad.apply(x, scale)


def ramp(progress: float) -> float:
    """Ganin & Lempitsky's schedule, 0 at the start to ~1 at the end: ``2 / (1 + exp(-10 p)) - 1``.

    The adversary's head starts random; its early gradients say nothing about outlets yet.
    """
    return 2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0


def outlet_vocabulary(outlets: Sequence[Optional[str]], labels: Sequence[int], min_articles: int
                      ) -> tuple[list[str], list[int]]:
    """The adversary's classes: outlets with at least ``min_articles`` training articles (sorted by name),
    and each one's label (the most common among its articles, ties to the lowest id)."""
    by_outlet: dict[str, Counter] = defaultdict(Counter)
    for o, y in zip(outlets, labels):
        if o:
            by_outlet[o][y] += 1
    names = sorted(o for o, c in by_outlet.items() if sum(c.values()) >= min_articles)
    return names, [min(by_outlet[o].items(), key=lambda kv: (-kv[1], kv[0]))[0] for o in names]


class OutletAdversary(nn.Module):
    """A linear outlet head over the label head's input; ``forward`` gives the outlet loss and accuracy.

    ``outlet_labels[k]`` is outlet k's label id; with ``within_label`` the head chooses only among
    outlets of the target outlet's label. ``scale`` (the strength of the push on the model) is set by
    the training loop each step. The head always learns to name the outlet; the model is pushed by

    - ``method="reverse"``: the head's own loss, its gradient reversed (Ganin & Lempitsky 2015; Baly et
      al. 2020). The model can meet it by making outlet A look like outlet B, which keeps the outlets
      apart for any other reader.
    - ``method="confusion"``: the cross-entropy of the head's answer against the uniform distribution
      over the candidate outlets (Tzeng et al. 2015), with the head held fixed: the model is asked for
      features on which the head cannot prefer any outlet.
    """

    def __init__(self, hidden: int, outlet_labels: Sequence[int], within_label: bool = True,
                 method: str = "confusion"):
        super().__init__()
        if len(outlet_labels) < 2:
            raise NewsbiasError(f"train.outlet_adversary needs at least 2 outlets with enough training articles; "
                                f"found {len(outlet_labels)}: lower train.outlet_adversary.min_articles or set its "
                                f"weight to 0")
        self.head = nn.Linear(hidden, len(outlet_labels))
        self.register_buffer("outlet_labels", torch.tensor(list(outlet_labels), dtype=torch.long), persistent=False)
        self.within_label = within_label
        self.method = method
        self.scale = 0.0

    def _logits(self, x: torch.Tensor, candidates: torch.Tensor, fixed_head: bool = False) -> torch.Tensor:
        w, b = self.head.weight.float(), self.head.bias.float()
        if fixed_head:
            w, b = w.detach(), b.detach()
        return F.linear(x, w, b).masked_fill(~candidates, float("-inf"))

    def forward(self, feats: torch.Tensor, outlet_ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, stats)`` over the rows whose outlet id is not :data:`IGNORE`. The loss is the head's
        cross-entropy plus, for ``confusion``, ``scale`` times the confusion term; ``stats``: ``outlet_loss``
        (the head's cross-entropy), ``outlet_acc`` (share of outlets it names) and ``outlet_confusion``."""
        keep = outlet_ids != IGNORE
        if not bool(keep.any()):
            zero = feats.sum() * 0.0  # keeps the graph (and DDP's view of the parameters) connected
            return zero + self.head.weight.sum() * 0.0, {}
        x, target = feats[keep].float(), outlet_ids[keep]
        candidates = torch.ones(len(target), len(self.outlet_labels), dtype=torch.bool, device=target.device)
        if self.within_label:
            candidates = self.outlet_labels[None, :] == self.outlet_labels[target][:, None]
        if self.method == "reverse":
            logits = self._logits(reverse_gradient(x, self.scale), candidates)
            ce = F.cross_entropy(logits, target)
            return ce, _stats(ce, logits, target)
        logits = self._logits(x.detach(), candidates)
        logp = F.log_softmax(self._logits(x, candidates, fixed_head=True), -1).masked_fill(~candidates, 0.0)
        confusion = -(logp.sum(-1) / candidates.sum(-1)).mean()
        ce = F.cross_entropy(logits, target)
        return ce + self.scale * confusion, {**_stats(ce, logits, target), "outlet_confusion": float(confusion.detach())}


def _stats(ce: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    return {"outlet_loss": float(ce.detach()), "outlet_acc": float((logits.argmax(-1) == target).float().mean())}


__all__ = ["IGNORE", "OutletAdversary", "outlet_vocabulary", "ramp", "reverse_gradient"]
