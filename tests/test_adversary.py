"""train.outlet_adversary: gradient reversal, the within-label outlet head, its vocabulary, and training with it."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from newsbias.adversary import IGNORE, OutletAdversary, outlet_vocabulary, ramp, reverse_gradient
from newsbias.errors import NewsbiasError
from newsbias.train import train

from conftest import make_planted_rows, write_jsonl
from test_train import tiny_cfg


def test_reverse_gradient_is_identity_forward_and_flips_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.3 * w)


def test_ramp_rises_from_zero_to_one():
    values = [ramp(p / 10) for p in range(11)]
    assert values[0] == 0 and values[-1] > 0.99 and values == sorted(values)
    assert ramp(-1) == 0 and ramp(2) == ramp(1)


@pytest.mark.parametrize("method", ["reverse", "confusion"])
def test_within_label_head_chooses_among_outlets_of_the_target_outlets_label(method):
    torch.manual_seed(0)
    adv = OutletAdversary(5, outlet_labels=[0, 0, 1, 2, 2], method=method)
    feats = torch.randn(5, 5)
    ids = torch.tensor([0, 1, 2, 4, IGNORE])
    loss, stats = adv(feats, ids)
    logits = adv.head(feats).detach()
    expected = torch.stack([
        F.cross_entropy(logits[0, [0, 1]], torch.tensor(0)),
        F.cross_entropy(logits[1, [0, 1]], torch.tensor(1)),
        torch.tensor(0.0),  # outlet 2 is its label's only outlet: nothing to tell apart
        F.cross_entropy(logits[3, [3, 4]], torch.tensor(1)),
    ]).mean()
    assert stats["outlet_loss"] == pytest.approx(float(expected), abs=1e-6)
    assert stats["outlet_acc"] == float((torch.stack([logits[0, :2].argmax() == 0, logits[1, :2].argmax() == 1,
                                                      torch.tensor(True), logits[3, 3:].argmax() == 1])).float().mean())
    if method == "reverse":
        assert torch.allclose(loss, expected, atol=1e-6)
    else:  # scale 0: the confusion term is reported, not added
        assert torch.allclose(loss, expected, atol=1e-6) and stats["outlet_confusion"] > 0

    everywhere = OutletAdversary(5, outlet_labels=[0, 0, 1, 2, 2], within_label=False, method=method)
    everywhere.load_state_dict(adv.state_dict())
    assert everywhere(feats, ids)[1]["outlet_loss"] == pytest.approx(float(F.cross_entropy(logits[:4], ids[:4])),
                                                                     abs=1e-6)


def test_confusion_pushes_the_model_towards_a_uniform_answer_and_only_the_head_towards_the_outlet():
    torch.manual_seed(0)
    adv = OutletAdversary(4, outlet_labels=[0, 0, 0], method="confusion")
    adv.scale = 2.0
    feats = torch.randn(8, 4, requires_grad=True)
    ids = torch.tensor([0, 1, 2, 0, 1, 2, 0, IGNORE])
    loss, stats = adv(feats, ids)
    loss.backward()

    x = feats.detach()[:7].clone().requires_grad_(True)
    logp = F.log_softmax(F.linear(x, adv.head.weight.detach(), adv.head.bias.detach()), -1)
    (-2.0 * logp.mean(-1).mean()).backward()  # cross-entropy against uniform over all 3 candidates
    assert torch.allclose(feats.grad[:7], x.grad, atol=1e-6)
    assert torch.count_nonzero(feats.grad[7]) == 0
    head = torch.nn.Linear(4, 3)
    head.load_state_dict(adv.head.state_dict())
    F.cross_entropy(head(feats.detach()[:7]), ids[:7]).backward()
    assert torch.allclose(adv.head.weight.grad, head.weight.grad, atol=1e-6)  # the confusion term leaves it
    uniform_feats = torch.zeros(3, 4)
    adv.head.weight.data.zero_()
    adv.head.bias.data.zero_()
    assert adv(uniform_feats, torch.tensor([0, 1, 2]))[1]["outlet_confusion"] == pytest.approx(math.log(3))


def test_the_model_gets_the_reversed_gradient_and_the_head_the_plain_one():
    torch.manual_seed(0)
    adv = OutletAdversary(4, outlet_labels=[0, 0, 1], method="reverse")
    adv.scale = 0.5
    feats = torch.randn(6, 4, requires_grad=True)
    ids = torch.tensor([0, 1, 0, 1, 2, IGNORE])
    loss, _ = adv(feats, ids)
    loss.backward()

    plain_feats = feats.detach().clone().requires_grad_(True)
    plain = OutletAdversary(4, outlet_labels=[0, 0, 1], method="reverse")
    plain.load_state_dict(adv.state_dict())
    plain.scale = -1.0  # reversing with -1 is the plain gradient
    plain(plain_feats, ids)[0].backward()
    assert torch.allclose(feats.grad, -0.5 * plain_feats.grad, atol=1e-7)
    assert torch.allclose(adv.head.weight.grad, plain.head.weight.grad)
    assert torch.count_nonzero(feats.grad[5]) == 0  # an IGNORE row teaches nothing


def test_no_outlet_to_learn_from_gives_zero_loss_connected_to_the_graph():
    adv = OutletAdversary(3, outlet_labels=[0, 1])
    feats = torch.randn(2, 3, requires_grad=True)
    loss, stats = adv(feats, torch.tensor([IGNORE, IGNORE]))
    loss.backward()
    assert float(loss.detach()) == 0 and stats == {} and adv.head.weight.grad is not None


def test_outlet_vocabulary_keeps_outlets_with_enough_articles_and_their_majority_label():
    outlets = ["b.com"] * 3 + ["a.com"] * 4 + ["tiny.com"] + [None] * 5
    labels = [2, 2, 1] + [0, 0, 1, 1] + [1] + [0] * 5
    names, outlet_labels = outlet_vocabulary(outlets, labels, min_articles=3)
    assert names == ["a.com", "b.com"] and outlet_labels == [0, 2]  # a.com's 2-2 tie goes to the lower id
    with pytest.raises(NewsbiasError, match="at least 2 outlets"):
        OutletAdversary(8, [1])


def outlet_rows(n: int, seed: int) -> list[dict]:
    """Planted-label articles from six outlets (two per label), each outlet writing its own marker word."""
    rows = make_planted_rows(n, seed=seed)
    for i, r in enumerate(rows):
        k = i % 2
        r["outlet"] = f"{r['output']}{k}.com"
        r["input"] = f"{r['input']} {'qxz' if k else 'wvy'} {'qxz' if k else 'wvy'}"
    return rows


@pytest.fixture(scope="module")
def outlet_data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("outlets")
    write_jsonl(out / "train.jsonl", outlet_rows(96, seed=1))
    write_jsonl(out / "val.jsonl", outlet_rows(30, seed=2))
    return out


def _log(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("head,method,over", [("cls", "confusion", {"model__pooling": "mean", "finetune": "full"}),
                                              ("cls", "reverse", {"model__pooling": "mean", "finetune": "full"}),
                                              ("lm", "confusion", {})])
def test_training_with_the_adversary_logs_its_outlets_and_losses(request, head, method, over, outlet_data_dir,
                                                                 tmp_path):
    from newsbias.train import setup

    model_dir = request.getfixturevalue("tiny_bert_dir" if head == "cls" else "tiny_qwen_dir")
    out = tmp_path / head
    cfg = tiny_cfg(model_dir, outlet_data_dir, out, head=head, optim__max_steps=4, eval__every_steps=4,
                   outlet_adversary__weight=1.0, outlet_adversary__min_articles=5, outlet_adversary__method=method,
                   **over)
    groups = setup(cfg).optimizer.param_groups
    assert groups[-1]["lr"] == cfg.outlet_adversary.lr != groups[0]["lr"] and len(groups[-1]["params"]) == 2
    summary = train(cfg.model_copy(update={"overwrite": True}))
    log = _log(out)
    adv = next(r for r in log if r["type"] == "adversary")
    assert adv["outlets"] == 6 and adv["articles"] == 96 and adv["scope"] == "within_label" and adv["method"] == method
    steps = [r for r in log if r["type"] == "train"]
    assert len(steps) == 4 and all(r["outlet_loss"] > 0 for r in steps)
    assert [r["adversary_scale"] for r in steps] == sorted(r["adversary_scale"] for r in steps)
    pushed = [r["adversary_scale"] * r.get("outlet_confusion", 0) for r in steps]
    assert all(abs(r["loss"] - r["label_loss"] - r["outlet_loss"] - p) < 1e-5 for r, p in zip(steps, pushed))
    assert summary["steps"] == 4 and not (out / "adversary.safetensors").exists()  # a training aid only


def test_resuming_restores_the_adversary_exactly(tiny_bert_dir, outlet_data_dir, tmp_path):
    kw = dict(model__pooling="mean", finetune="full", optim__max_steps=4, eval__every_steps=2,
              checkpoint__every_steps=2, outlet_adversary__weight=1.0, outlet_adversary__min_articles=5)
    train(tiny_cfg(tiny_bert_dir, outlet_data_dir, tmp_path / "a", head="cls", **kw))
    cfg = tiny_cfg(tiny_bert_dir, outlet_data_dir, tmp_path / "b", head="cls", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, _interrupt_after_step=3)  # the last checkpoint is step 2
    train(cfg, resume=True)
    steps = [[r.get("outlet_loss") for r in _log(tmp_path / d) if r["type"] == "train"] for d in "ab"]
    assert steps[0] == steps[1]
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_adversary_needs_outlets_and_a_head_over_one_vector(tiny_bert_dir, tiny_qwen_dir, planted_data_dir,
                                                                outlet_data_dir, tmp_path):
    with pytest.raises(NewsbiasError, match="needs the training articles' outlets .* found 0: set its weight to 0"):
        train(tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path / "a", head="cls", model__pooling="mean",
                       outlet_adversary__weight=1.0))
    assert not (tmp_path / "a").exists()
    with pytest.raises(NewsbiasError, match="reads one vector per article"):
        train(tiny_cfg(tiny_qwen_dir, outlet_data_dir, tmp_path / "b", head="cls", optim__max_steps=1,
                       outlet_adversary__weight=1.0, outlet_adversary__min_articles=5))


def test_outlets_the_adversary_cannot_tell_apart_are_named_before_the_model_loads(caplog):
    from newsbias.config import TrainConfig
    from newsbias.records import Article
    from newsbias.train import check_adversary_data

    def cfg(**adv):
        return TrainConfig.model_validate({"model": {"name_or_path": "m"}, "data": {"path": "d"},
                                           "outlet_adversary": {"weight": 1.0, "min_articles": 2, **adv}})

    def arts(outlets_by_label):
        return [Article(id=f"{o}{i}", text="t", label=lab, outlet=o)
                for lab, outlets in outlets_by_label.items() for o in outlets for i in range(3)]

    with pytest.raises(NewsbiasError, match="found 1: set its weight to 0"):
        check_adversary_data(cfg(), arts({"left": ["a"]}))
    with pytest.raises(NewsbiasError, match="0 of the 3 training outlets have 5 or more articles"):
        check_adversary_data(cfg(min_articles=5), arts({"left": ["a"], "center": ["b"], "right": ["c"]}))
    with pytest.raises(NewsbiasError, match="every label has one: use train.outlet_adversary.scope=all"):
        check_adversary_data(cfg(), arts({"left": ["a"], "center": ["b"], "right": ["c"]}))
    check_adversary_data(cfg(scope="all"), arts({"left": ["a"], "center": ["b"], "right": ["c"]}))
    check_adversary_data(cfg(), arts({"left": ["a", "b"], "center": ["c"], "right": ["d"]}))
    assert "center, right each have one outlet with 2 or more articles" in caplog.text
