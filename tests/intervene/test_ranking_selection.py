"""From a ranking and a ratio to the neurons removed: the lowest-ranked, globally or per layer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neurondb.arch import ModelShape
from neurondb.intervene import PruneError, mask_from_ranking, priority_from_ranking, read_ranking
from neurondb.intervene.selection import ranking_scope
from neurondb.store.errors import StoreError

SHAPE = ModelShape("bert", 8, {"encoder": (10, 6)})


def _ranking(scope: str | None, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [("encoder", la, n) for la, d in enumerate(SHAPE.widths["encoder"]) for n in range(d)]
    df = pd.DataFrame(rows, columns=["stack", "layer", "neuron"])
    df["score"] = rng.random(len(df))
    if scope == "layer":
        df["rank"] = df.groupby("layer")["score"].rank(ascending=False).astype(int)
        df["scope"] = "layer"
    else:
        df["rank"] = df["score"].rank(ascending=False).astype(int)
        if scope:
            df["scope"] = scope
    df["name"], df["method"] = "r", "test"
    return df


def test_global_ratio_removes_the_lowest_ranked():
    df = _ranking(None)
    assert ranking_scope(df) == "global"
    m = mask_from_ranking(df, 0.3, SHAPE)
    n = math.floor(0.3 * 16 + 0.5)  # 5
    assert len(m) == n
    worst = df.nlargest(n, "rank")
    assert {(s, la, v) for s, la, v in zip(*m.to_arrays())} == set(
        zip(worst["stack"], worst["layer"], worst["neuron"]))
    assert m.meta["scope"] == "global" and m.meta["ratio"] == 0.3


def test_per_layer_ratio_applies_in_each_layer():
    df = _ranking("layer")
    assert ranking_scope(df) == "layer"
    m = mask_from_ranking(df, 0.5, SHAPE)
    assert m.counts() == {("encoder", 0): 5, ("encoder", 1): 3}
    for la in (0, 1):
        g = df[df.layer == la]
        worst = set(g.nlargest(m.counts()[("encoder", la)], "rank").neuron)
        assert set(m.get("encoder", la).tolist()) == worst
    prio = priority_from_ranking(df)
    assert prio[("encoder", 1)][0] == df[(df.layer == 1) & (df["rank"] == 1)].neuron.item()


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_ratio_outside_open_unit_interval_is_refused(ratio):
    with pytest.raises(PruneError, match=r"outside \(0, 1\)") as e:
        mask_from_ranking(_ranking(None), ratio, SHAPE)
    assert "\n" not in str(e.value)


def test_incomplete_or_foreign_ranking_is_refused():
    df = _ranking(None)
    with pytest.raises(PruneError, match="covers 9 of the 10"):
        mask_from_ranking(df.iloc[1:], 0.3, SHAPE)
    big = ModelShape("bert", 8, {"encoder": (12, 6)})
    with pytest.raises(PruneError, match="covers 10 of the 12"):
        mask_from_ranking(df, 0.3, big)


def test_read_ranking_from_a_store(tmp_path):
    path = tmp_path / "results" / "rankings"
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(_ranking("layer")), path / "skill.parquet")
    assert len(read_ranking(tmp_path, "skill")) == 16
    with pytest.raises(StoreError, match="no ranking 'other' \\(rankings: skill\\)"):
        read_ranking(tmp_path, "other")


def test_means_from_running_stats_pool_every_slot():
    from neurondb.intervene import means_from_stats
    from neurondb.store.stats import RunningStats

    rng = np.random.default_rng(0)
    st = RunningStats({"encoder": (4, 3)}, n_labels=2)
    rows = {0: rng.normal(size=(7, 4)), 1: rng.normal(size=(7, 3))}
    slots = st.slot_ids("encoder", ["mask", "prompt:0", "mask", "prompt:1", "mask", "x", "x"])
    labels = np.array([0, 1, 0, 1, -1, 0, 1])
    st.update_counts("encoder", slots, labels)
    for la, x in rows.items():
        st.update("encoder", la, slots, labels, x)
    means = means_from_stats(st)
    for la, x in rows.items():
        np.testing.assert_allclose(means[("encoder", la)], x.mean(axis=0), atol=1e-12)
