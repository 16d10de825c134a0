"""Results are SQL views; the table macros answer the usual questions like the Python API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurondb.query import correlate, make_mask, predictivity, random_ranking, top_examples
from neurondb.query.macros import MACROS
from neurondb.store import open_store

from . import naive


@pytest.fixture
def analysed(skill_store):
    st = skill_store
    predictivity(st, "ev", "tr", name="A")
    predictivity(st, "ev", "tr", slots="prompt:0,prompt:1", name="B")
    random_ranking(st, seed=1, name="R")
    correlate(st, "A,B", name="AB")
    make_mask(st, "A", 0.25, name="mA")
    fresh = open_store(st.path)  # a new connection sees the result views
    fresh.eval = st.eval
    return fresh


def sql(st, q: str) -> pd.DataFrame:
    return st.sql(q).df()


def per_layer_top(df: pd.DataFrame, frac: float) -> set:
    out = set()
    for (s, la), g in df.groupby(["stack", "layer"]):
        k = int(frac * len(g))  # the default count rule, int(p * d)
        g = g.sort_values(["score", "neuron"], ascending=[False, True]).head(k)
        out |= {(s, la, n) for n in g["neuron"]}
    return out


def test_every_macro_is_created(analysed):
    names = set(sql(analysed, "SELECT function_name FROM duckdb_functions() "
                              "WHERE function_type = 'table_macro'")["function_name"])
    for m in MACROS:
        assert m.split("MACRO", 1)[1].split("(", 1)[0].strip() in names


def test_skill_neuron_macros(analysed):
    A = sql(analysed, "SELECT * FROM rankings WHERE name = 'A'")
    B = sql(analysed, "SELECT * FROM rankings WHERE name = 'B'")
    assert len(A) == 32 and set(sql(analysed, "SELECT DISTINCT name FROM rankings")["name"]) == {"A", "B", "R"}
    got = sql(analysed, "SELECT * FROM skill_neurons('A', fraction := 0.25)")
    assert {(r.stack, r.layer, r.neuron) for r in got.itertuples()} == per_layer_top(A, 0.25)
    assert got.groupby("layer").size().tolist() == [4, 4]
    top = sql(analysed, "SELECT * FROM top_neurons('A', k := 2)")
    assert {(r.layer, r.neuron) for r in top.itertuples()} == {(1, 5), (0, 7)}
    hist = sql(analysed, "SELECT * FROM skill_layer_histogram('A', fraction := 0.0625)")
    assert hist["n_skill"].tolist() == [1, 1] and hist["width"].tolist() == [16, 16]
    only = sql(analysed, "SELECT * FROM skill_neurons_only_in('A', 'B', fraction := 0.25)")
    want = per_layer_top(A, 0.25) - per_layer_top(B, 0.25)
    assert {(r.stack, r.layer, r.neuron) for r in only.itertuples()} == want
    assert ("encoder", 0, 7) in want  # its peak slot prompt:2 is not in B
    one = sql(analysed, "SELECT * FROM neuron_scores('encoder', 1, 5)")
    assert one["name"].tolist() == ["A", "B", "R"] and one.loc[0, "rank"] == 1


def test_result_macros(analysed):
    corr = sql(analysed, "SELECT * FROM ranking_correlation('A', 'B')")
    assert corr["layer"].tolist() == [0, 1] and corr["spearman"].between(-1, 1).all()
    masked = sql(analysed, "SELECT * FROM mask_neurons('mA')")
    assert len(masked) == 8
    assert sql(analysed, "SELECT * FROM mask_layer_histogram('mA')")["n_neurons"].tolist() == [4, 4]


def test_top_examples_python_and_sql(analysed):
    ev = analysed.eval
    h = naive.stored(ev.acts[("encoder", 1)], "float16")[:, :, 5]   # [examples, slots]
    best = h.max(1)
    order = sorted(range(len(best)), key=lambda e: (-best[e], e))[:5]
    py = top_examples(analysed, "ev", 1, 5, k=5)
    assert py["example_id"].tolist() == [1000 + e for e in order]
    np.testing.assert_allclose(py["value"], best[order], rtol=1e-6)
    assert py["slot"].tolist() == [["prompt:0", "prompt:1", "prompt:2"][int(np.argmax(h[e]))]
                                   for e in order]
    assert (py["label"] == 1).all()  # the planted neuron fires for label 1
    q = sql(analysed, "SELECT * FROM top_examples('ev', 'encoder', 1, 5, k := 5)")
    assert q["example_id"].tolist() == py["example_id"].tolist()
    np.testing.assert_allclose(q["value"], py["value"], rtol=1e-6)
    assert q["slot"].tolist() == py["slot"].tolist()
    only_p0 = top_examples(analysed, "ev", 1, 5, k=3, slots="prompt:0")
    assert set(only_p0["slot"]) == {"prompt:0"}


def _our_macros(st) -> set[str]:
    """The neurondb macros that exist in DuckDB now (read past the lazy creation)."""
    ours = {m.split("MACRO", 1)[1].split("(", 1)[0].strip() for m in MACROS}
    ours |= {"activations", "gradients"}
    rows = st.connection.con.execute("SELECT function_name FROM duckdb_functions() "
                                     "WHERE function_type = 'table_macro'").fetchall()
    return {r[0] for r in rows} & ours


def test_macros_are_created_when_a_query_first_names_them(analysed):
    from neurondb.errors import QueryError

    st = open_store(analysed.path)
    assert _our_macros(st) == set()  # opening the store creates none
    with pytest.raises(QueryError):  # a refused statement naming one creates nothing
        st.sql("CREATE OR REPLACE MACRO top_neurons(a) AS TABLE SELECT 1")
    assert _our_macros(st) == set()
    got = sql(st, "SELECT * FROM mask_layer_histogram('mA')")
    assert _our_macros(st) == {"mask_layer_histogram"}
    assert got["n_neurons"].sum() == len(sql(st, "SELECT * FROM mask_neurons('mA')"))
    assert _our_macros(st) == {"mask_layer_histogram", "mask_neurons"}
    # listing the functions shows every macro
    listed = set(sql(st, "SELECT function_name FROM duckdb_functions()")["function_name"])
    assert {"skill_neurons", "top_contexts", "activations"} <= listed
