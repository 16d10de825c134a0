"""``extract --profile --correlate-layers``: within-model Pearson sums on the device, against
numpy.corrcoef over a per-token capture of the same batches; merged over chunks; read by
correlate-neurons with one run; refused without --profile or for a missing layer."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import neurondb
from neurondb.cli.app import app
from neurondb.errors import ExtractError, QueryError
from neurondb.profile.read import run_state

KW = dict(split="train", readout="none", batch_size=4, progress=False, template="{text}")


def test_within_model_correlation(tmp_path, tiny_path, sentiment_dir):
    model = str(tiny_path("bert", head="base"))
    ref = neurondb.extract(model, str(sentiment_dir), tmp_path / "t", positions="all",
                           dtype="float32", run="t", **KW)
    x = np.concatenate([ref.activations(la, run="t") for la in (1, 0)], axis=1)
    want = np.corrcoef(x.astype(np.float64).T)
    st = neurondb.extract(model, str(sentiment_dir), tmp_path / "p", profile=True, top_k=3,
                          run="p", correlate_layers=[1, 0], chunk_examples=8, **KW)
    c = run_state(st, "p").corr
    assert c.layers == (1, 0) and c.n == x.shape[0]
    np.testing.assert_allclose(c.corr(), want, rtol=1e-9, atol=1e-10)
    st.close()
    res = CliRunner().invoke(app, ["correlate-neurons", str(tmp_path / "p"), "--runs", "p",
                                   "--top", "2"])
    assert res.exit_code == 0, res.output
    st = neurondb.open(tmp_path / "p")
    t = st.sql("SELECT * FROM neuron_correlations WHERE partner_rank = 1").df()
    assert len(t) == 96 and ((t.layer != t.partner_layer) | (t.neuron != t.partner_neuron)).all()
    off = want.copy()
    np.fill_diagonal(off, np.nan)
    t = t.sort_values(["layer", "neuron"], ascending=[False, True])
    np.testing.assert_allclose(t["corr"], np.nanmax(off, axis=1), rtol=1e-9)
    st.close()
    from neurondb.query.correlate_neurons import within_model

    plain = neurondb.extract(model, str(sentiment_dir), tmp_path / "p", profile=True, top_k=3,
                             run="q", **KW)
    with pytest.raises(QueryError, match="has no within-model correlation sums"):
        within_model(plain, "q")
    plain.close()
    ref.close()


def test_correlate_layers_bad_input(tmp_path, tiny_path, sentiment_dir):
    model = str(tiny_path("bert", head="base"))
    out = tmp_path / "s"
    with pytest.raises(ExtractError, match="add profile=True"):
        neurondb.extract(model, str(sentiment_dir), out, correlate_layers=[0], **KW)
    with pytest.raises(ExtractError, match="correlate_layers 7 is out of range"):
        neurondb.extract(model, str(sentiment_dir), out, profile=True, correlate_layers=[7],
                         **KW)
    assert not out.exists()
