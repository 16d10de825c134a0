"""Small stores for the browser's tests, built without a model: real-looking sentences with
tokens, hostile texts and tokens, rankings, a mask and a suppression result; and a store with
no results at all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from neurondb.query import make_mask, predictivity, random_ranking
from neurondb.store import open_store
from neurondb.testing_stores import make_store, write_stats_run, write_text_run
from tests.report.conftest import SLOTS, planted, suppression_frame, write_table

WIDTHS = {"encoder": (16, 16)}
HOSTILE_TEXT = "<script>alert('x')</script> \"quoted\" <img src=x onerror=alert(1)> great"
HOSTILE_TOKENS = ["<script>alert('x')</script>", "\"quoted\"", "<img src=x onerror=alert(1)>",
                  "Ġgreat", "▁great", "<s>"]
POS = ["a wonderful and moving film", "the acting is great and the story is great",
       "funny , warm and great fun", "one of the best films of the year", "a great cast"]
NEG = ["a dull and boring film", "the plot is a mess", "bad acting and a weak script",
       "i wanted to leave early", "the worst film of the year"]
#: planted: "great" fires encoder layer 1 neuron 5; "boring" drives layer 0 neuron 3 down
PLANTS = [("encoder", 1, 5, "great", 4.0), ("encoder", 0, 3, "boring", -3.0),
          ("encoder", 1, 5, "Ġgreat", 4.0)]


@dataclass
class Built:
    root: Path
    hostile_id: int


def sentences() -> tuple[list[str], list[int], list[list[str]]]:
    texts = [*POS, *NEG, HOSTILE_TEXT]
    labels = [1] * len(POS) + [0] * len(NEG) + [1]
    toks = [t.split() for t in texts[:-1]] + [HOSTILE_TOKENS]
    return texts, labels, toks


def build_full(root: Path) -> Built:
    """Two runs (validation per token, train as running statistics), two rankings, a mask
    and a suppression result of the first ranking."""
    make_store(root, WIDTHS, name="tiny-bert")
    texts, labels, toks = sentences()
    write_text_run(root, "ev", "validation", texts, labels, ["neg", "pos"], toks, PLANTS,
                   preds=[*labels[:-2], 1 - labels[-2], labels[-1]])
    y, a = planted(40, 1)
    write_stats_run(root, "tr", "train", y, SLOTS, a,
                    label_names=["neg", "pos"])
    st = open_store(root)
    predictivity(st, eval="ev", train="ev", name="skill")
    random_ranking(st, seed=0, name="random")
    make_mask(st, "skill", 0.25, name="top25")
    st.close()
    write_table(root, "suppression", "sup", suppression_frame(), {"ranking": "skill",
                                                                  "rates": [0.01, 0.05, 0.1]})
    return Built(root=root, hostile_id=1000 + len(texts) - 1)


@pytest.fixture(scope="package")
def full_store(tmp_path_factory) -> Built:
    return build_full(tmp_path_factory.mktemp("serve") / "store")


@pytest.fixture(scope="package")
def bare_store(tmp_path_factory) -> Path:
    """One per-token run, no results, no profile."""
    root = make_store(tmp_path_factory.mktemp("serve-bare") / "bare", WIDTHS)
    texts, labels, toks = sentences()
    write_text_run(root, "only", "validation", texts, labels, ["neg", "pos"], toks, PLANTS)
    return root
