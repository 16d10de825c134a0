"""Shared fixtures: tiny random models saved to disk, and small labelled data files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neurondb.testing import save_tiny

POS = ["the movie was great", "a wonderful film", "good story and fine acting", "the best film",
       "funny and happy", "i love this movie"]
NEG = ["the movie was awful", "a boring film", "bad story and dull acting", "the worst film",
       "sad and terrible", "i hate this movie"]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_path(models_dir):
    """``tiny_path(family, head="lm", seed=0)`` -> directory of a saved tiny model."""
    cache: dict = {}

    def make(family: str, head: str = "lm", seed: int = 0) -> Path:
        key = (family, head, seed)
        if key not in cache:
            cache[key] = save_tiny(family, models_dir / f"{family}-{head}-{seed}", head=head, seed=seed)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def sentiment_dir(tmp_path_factory) -> Path:
    """A directory with train.parquet (24 rows) and validation.parquet (12 rows)."""
    d = tmp_path_factory.mktemp("sentiment")
    texts = POS + NEG
    labels = [1] * len(POS) + [0] * len(NEG)
    pq.write_table(pa.table({"sentence": texts * 2, "label": labels * 2}), d / "train.parquet")
    pq.write_table(pa.table({"sentence": texts, "label": labels, "idx": list(range(100, 112))}),
                   d / "validation.parquet")
    return d
