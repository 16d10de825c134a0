"""correlate-neurons: the streamed Pearson kernel against numpy.corrcoef, best partners with
ties, the result table and figure, and refused requests (one line, nothing written)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import neurondb
from neurondb.cli.app import app
from neurondb.errors import QueryError, StoreError
from neurondb.profile.pearson import PearsonAccumulator, best_partners
from neurondb.query.correlate_neurons import correlate_neurons, pearson_runs

KW = dict(readout="none", positions="all", dtype="float32", batch_size=4, progress=False)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, tiny_path, sentiment_dir):
    """Stores A and B of two tiny BERTs (seeds 0, 1) over the same tokens, and C over
    other tokens (first positions only)."""
    root = tmp_path_factory.mktemp("corr")
    for name, seed, extra in (("A", 0, {}), ("B", 1, {}), ("C", 1, {"positions": "first"})):
        neurondb.extract(str(tiny_path("bert", seed=seed)), str(sentiment_dir), root / name,
                         run=name, **dict(KW, **extra)).close()
    return root


def test_kernel_equals_numpy_corrcoef():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 0.01, size=(257, 6)).astype(np.float32)  # a large mean, small spread
    y = np.c_[x[:, :2] * -3 + 1, rng.normal(size=(257, 3))].astype(np.float32)
    acc = PearsonAccumulator(6, 5)
    for s in range(0, 257, 10):
        acc.update(x[s:s + 10], y[s:s + 10])
    want = np.corrcoef(np.c_[x, y].astype(np.float64).T)[:6, 6:]
    np.testing.assert_allclose(acc.corr(), want, rtol=1e-9, atol=1e-11)
    const = PearsonAccumulator(1, 1)
    const.update(np.ones((5, 1)), np.arange(5.0)[:, None])
    assert np.isnan(const.corr()).all()


def test_best_partners_ties_to_the_lower_index():
    corr = np.array([[0.5, 0.9, 0.9, np.nan, 0.9], [np.nan, -1.0, 0.2, 0.2, 0.1]])
    idx, r = best_partners(corr, 2)
    assert idx.tolist() == [[1, 2], [2, 3]]
    np.testing.assert_array_equal(r, [[0.9, 0.9], [0.2, 0.2]])
    idx, _ = best_partners(corr, 5)
    assert idx[1].tolist() == [2, 3, 4, 1, 0]  # NaN last


def test_runs_of_two_models_against_corrcoef(two_models):
    st = neurondb.open(two_models / "A", two_models / "B")
    xa = np.concatenate([st.activations(la, run="A") for la in range(2)], axis=1)
    xb = np.concatenate([st.activations(la, run="B") for la in range(2)], axis=1)
    want = np.corrcoef(np.c_[xa, xb].astype(np.float64).T)[:96, 96:]
    got = pearson_runs(st, "A", "B", "encoder", [0, 1], [0, 1], xa.shape[0], block_rows=7)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    res = correlate_neurons(st, "A,B", top=3, png=two_models / "fig.png", block_rows=16)
    t = res.table
    assert len(t) == 96 * 3 and res.png.stat().st_size > 1000
    best = t[t.partner_rank == 1].sort_values(["layer", "neuron"])
    np.testing.assert_allclose(best["corr"], np.nanmax(want, axis=1), rtol=1e-9)
    flat = best.partner_layer * 48 + best.partner_neuron
    assert (flat.to_numpy() == np.nanargmax(want, axis=1)).all()
    one = correlate_neurons(st, "A,B", layers=[1], top=2, write=False)
    assert set(one.table.layer) == {1} and set(one.table.partner_layer) == {1}
    st.close()
    sql = neurondb.open(two_models / "A", two_models / "B").sql(
        "SELECT count(*), max(corr) FROM neuron_correlations WHERE partner_rank = 1").fetchall()
    assert sql[0][0] == 96 and abs(sql[0][1] - np.nanmax(want)) < 1e-9


def test_one_run_with_itself_is_within_model(two_models):
    """``--runs A,A`` of a per-token run: every neuron's best partners among the others (its
    own r = 1 used to rank first), against numpy.corrcoef without the diagonal."""
    st = neurondb.open(two_models / "A")
    x = np.concatenate([st.activations(la, run="A") for la in range(2)], axis=1)
    want = np.corrcoef(x.astype(np.float64).T)
    np.fill_diagonal(want, np.nan)
    t = correlate_neurons(st, "A,A", top=2, write=False).table
    mine = t.layer * 48 + t.neuron
    partner = t.partner_layer * 48 + t.partner_neuron
    assert (mine != partner).all()
    best = t[t.partner_rank == 1].sort_values(["layer", "neuron"])
    np.testing.assert_allclose(best["corr"], np.nanmax(want, axis=1), rtol=1e-9)
    assert ((best.partner_layer * 48 + best.partner_neuron).to_numpy()
            == np.nanargmax(want, axis=1)).all()
    st.close()


def test_refused_requests_write_nothing(two_models):
    st = neurondb.open(two_models / "C", two_models / "B")
    results = two_models / "C" / "results"
    with pytest.raises(QueryError, match="do not capture the same tokens"):
        correlate_neurons(st, "C,B")
    with pytest.raises(StoreError, match="layer 5 is out of range"):
        correlate_neurons(st, "B,C", layers=[5])
    with pytest.raises(QueryError, match="takes two runs"):
        correlate_neurons(st, "B")
    for rows in (0, -5):  # -5 wrote a table of NaN correlations (no block was ever read)
        with pytest.raises(QueryError, match=f"block_rows must be at least 1, not {rows}"):
            correlate_neurons(st, "B,B", block_rows=rows)
    assert not results.exists()
    st.close()
    runner = CliRunner()
    for args, msg in ((["--runs", "C,B"], "do not capture the same tokens"),
                      (["--runs", "C,B", "--layers", "7"], "layer 7 is out of range"),
                      (["--runs", "C,nope"], "run 'nope' is not in the store"),
                      (["--runs", "B,B", "--block-rows", "0"], "--block-rows must be at least 1")):
        res = runner.invoke(app, ["correlate-neurons", str(two_models / "C"), "--with",
                                  str(two_models / "B"), *args])
        assert res.exit_code == 2 and msg in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    assert not results.exists()


def test_correlations_larger_than_memory_are_refused(two_models, monkeypatch):
    """The [p, q] float64 arrays of a correlation (five at the peak) must fit in free memory:
    otherwise refused before a row is read, naming --layers."""
    from neurondb.query import correlate_neurons as cn
    from neurondb.runtime import memory

    st = neurondb.open(two_models / "B")
    p = sum(st.shape.d_ff("encoder", la) for la in range(st.shape.n_layers("encoder")))
    need = cn.PEAK_MATRICES * 8 * p * p
    monkeypatch.setattr(memory, "available_memory", lambda device=None: need - 1)
    reads = []
    monkeypatch.setattr(cn, "_read", lambda *a: reads.append(a))
    with pytest.raises(QueryError, match=rf"correlating {p:,} neurons of B with {p:,} of B "
                                         r"needs about .* give fewer layers"):
        correlate_neurons(st, "B,B", write=False)
    assert not reads and not (two_models / "B" / "results").exists()
    monkeypatch.undo()
    assert len(correlate_neurons(st, "B,B", write=False).table) > 0
    st.close()


def test_figure_paths_are_checked_first(two_models, tmp_path):
    """--png a directory: refused before the correlation is computed or its table written
    (correlate-neurons, suppress and transfer share the check)."""
    from neurondb.errors import UsageError
    from neurondb.intervene.suppress import SuppressRequest
    from neurondb.tune.transfer import transfer

    def files():
        return sorted(str(p) for p in two_models.rglob("*"))

    before = files()
    st = neurondb.open(two_models / "A", two_models / "B")
    with pytest.raises(UsageError, match=f"png: {tmp_path} is a directory; give a file name"):
        correlate_neurons(st, "A,B", png=tmp_path, name="never")
    st.close()
    assert files() == before
    with pytest.raises(UsageError, match="png: .* is a directory"):
        SuppressRequest(model="m", data="d", ranking="r", store=two_models / "A", png=tmp_path)
    for kw in (dict(png=tmp_path), dict(csv=tmp_path), dict(csv=tmp_path / "no" / "t.csv")):
        with pytest.raises(UsageError, match="(png|csv): "):
            transfer([tmp_path], ["movie_reviews:validation"], **kw)


def test_default_names_tell_run_pairs_apart(two_models, tmp_path, tiny_path, sentiment_dir):
    """Without --name, A,B and then A,A (a second pair sharing run A) are two results: the
    default name holds both runs (it was ``ncorr_A+1`` for both, so the second was refused)."""
    neurondb.extract(str(tiny_path("bert", seed=0)), str(sentiment_dir), tmp_path / "A",
                     run="A", **KW).close()
    runner = CliRunner()
    for pair in ("A,B", "A,A", "B,A"):
        res = runner.invoke(app, ["correlate-neurons", str(tmp_path / "A"), "--with",
                                  str(two_models / "B"), "--runs", pair, "--top", "1"])
        assert res.exit_code == 0, res.output
    names = sorted(p.stem for p in (tmp_path / "A" / "results" / "neuron_correlations")
                   .glob("*.parquet"))
    assert names == ["ncorr_A+A", "ncorr_A+B", "ncorr_B+A"]
