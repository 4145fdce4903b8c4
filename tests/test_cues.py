"""Outlet-cue removal: names, links, bylines, datelines and learned boilerplate; ids and gold untouched."""

import json
import random

import pandas as pd
import pytest

from newsbias.config import PrepConfig
from newsbias.data.cues import MASK, CueRemover, learn_boilerplate, name_variants
from newsbias.data.prep import prepare

from conftest import write_jsonl

WORDS = "senate vote bill economy tax border health court judge plan voters governor budget".split()
OUTLETS = [("CNN (Web News)", "cnn.com", "left"), ("The Hill", "thehill.com", "center"),
           ("Fox Online News", "foxnews.com", "right"), ("USA TODAY", "usatoday.com", "center")]


def article(rng, source, domain, i):
    body = " ".join(rng.choice(WORDS) for _ in range(40))
    house = {"cnn.com": "Sign up for CNN's Five Things newsletter.", "foxnews.com": "Click here to get the Fox News app.",
             "thehill.com": "", "usatoday.com": ""}[domain]
    return (f"WASHINGTON (AP) — The {body}, {source.split(' (')[0]} learned.\nBy Jane Doe and Max Roe\n"
            f"{body.capitalize()} on day {i}. {house} More at https://www.{domain}/story/{i} or @{domain.split('.')[0]}.")


def corpus(n_per=8, seed=0):
    rng = random.Random(seed)
    return [{"id": f"{d}-{i}", "text": article(rng, s, d, i), "label": lab, "source": s, "url": f"https://{d}/a/{i}"}
            for s, d, lab in OUTLETS for i in range(n_per)]


def test_name_variants_cover_desk_suffixes_the_and_capitals_but_not_bare_common_words():
    assert {"CNN", "cnn.com"} <= name_variants("CNN (Web News)", "cnn.com")
    assert {"New York Times", "The New York Times", "the New York Times"} <= name_variants("New York Times - News", None)
    assert "USA Today" in name_variants("USA TODAY", "usatoday.com")
    hill = name_variants("The Hill", "thehill.com")
    assert {"The Hill", "the Hill"} <= hill and "Hill" not in hill


def test_boilerplate_is_per_outlet_and_shared_sentences_are_not():
    topics = ["tax", "trade", "courts", "schools", "roads", "energy"]
    texts = [f"Sign up for our newsletter. A story about {t}." for t in topics]
    texts += [f"The senate met on Tuesday. More on {t}." for t in topics]
    outlets = ["a.com"] * 6 + ["b.com", "c.com", "d.com", "e.com", "f.com", "g.com"]
    learned = learn_boilerplate(texts, outlets)
    assert learned == {"sign up for our newsletter.": "a.com"}
    assert learn_boilerplate(texts[:4], outlets[:4]) == {}  # 4 < 5 articles


@pytest.mark.parametrize("mode", ["mask", "drop"])
def test_cues_are_removed_and_counted(mode):
    frame = pd.DataFrame(corpus())
    frame["outlet"] = [r.split("-")[0] for r in frame["id"]]
    remover = CueRemover.learn(frame, mode)
    out = [remover.apply(t, o) for t, o in zip(frame["text"], frame["outlet"])]
    for text in out:
        for cue in ("CNN", "the Hill", "Fox", "USA Today", "https://", "@cnn", "By Jane Doe", "WASHINGTON (AP)",
                    "newsletter", "Fox News app"):
            assert cue not in text, (cue, text)
        assert ("[outlet]" in text) == (mode == "mask")
        assert "senate" in text or "tax" in text or "court" in text  # the article itself stays
    rep = remover.report()
    assert rep["removed"]["bylines"] == rep["removed"]["datelines"] == len(frame)
    assert rep["removed"]["boilerplate"] == 16 and rep["boilerplate_sentences"] == 2
    assert set(rep["per_outlet"]) == {"cnn.com", "thehill.com", "foxnews.com", "usatoday.com"}


def test_prep_masks_cues_without_touching_ids_or_gold(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", corpus(n_per=12))
    base = {"input": {"path": str(path)}, "out_dir": str(tmp_path / "o"), "clean": {"min_chars": 50},
            "split": {"mode": "random"}, "dedup": {"near": False}}
    kept, _, _ = prepare(PrepConfig.model_validate(base))
    masked, meta, _ = prepare(PrepConfig.model_validate({**base, "clean": {"min_chars": 50, "outlet_cues": "mask"}}))
    for split in kept:
        a, b = kept[split].set_index("id"), masked[split].set_index("id")
        assert list(a.index) == list(b.index) and (a["label"] == b["label"]).all()
        assert b["text"].str.contains(MASK, regex=False).all() and not a["text"].str.contains(MASK, regex=False).any()
    cues = meta["outlet_cues"]
    assert cues["mode"] == "mask" and cues["removed"]["names"] >= 48 and cues["boilerplate_examples"]
    assert json.dumps(cues)  # goes into prep_meta.json as is
    assert [f for f in meta["filters"] if f["step"] == "outlet_cues"][0]["mode"] == "mask"


def test_each_article_loses_only_its_own_outlets_cues():
    topics = ["taxes", "trade", "courts", "schools", "roads", "energy"]
    rows = [{"text": f"A story on {t} by the desk. Sign up for our newsletter today.", "source": "Vox",
             "outlet": "vox.com"} for t in topics]
    rows += [{"text": "Barack Obama spoke with the Vice President. POLITICO has learned more; CNN and Vox reported it. "
                      "Sign up for our newsletter today.", "source": "Politico", "outlet": "politico.com"},
             {"text": "My plan for the economy, by Barack Obama.", "source": "Barack Obama", "outlet": "barackobama"},
             {"text": "The Vice magazine piece.", "source": "Vice", "outlet": "vice.com"}]
    frame = pd.DataFrame(rows)
    remover = CueRemover.learn(frame, "mask")
    politico = remover.apply(rows[6]["text"], "politico.com")
    assert politico == ("Barack Obama spoke with the Vice President. [outlet] has learned more; CNN and Vox reported it. "
                        "Sign up for our newsletter today.")  # Vox's boilerplate and name are Vox's own cues only
    assert remover.apply(rows[0]["text"], "vox.com") == "A story on taxes by the desk."
    assert remover.apply(rows[7]["text"], "barackobama") == "My plan for the economy, by [outlet]."
    assert remover.apply(rows[8]["text"], "vice.com") == "The [outlet] magazine piece."
