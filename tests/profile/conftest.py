"""Fixtures shared by the profile tests."""

from __future__ import annotations

import pytest

from neurondb.testing import save_tiny


@pytest.fixture(scope="package")
def relu_model(tmp_path_factory) -> str:
    """A tiny BERT with ReLU FFNs (many exact zeros: ties in the top/bottom-K)."""
    return str(save_tiny("bert", tmp_path_factory.mktemp("relu") / "m", head="base",
                         hidden_act="relu"))


@pytest.fixture(scope="package")
def one_pass(tmp_path_factory, relu_model, sentiment_dir):
    """A profile run of the ReLU model in one pass (``PROFILE`` of test_extract_profile)."""
    import neurondb
    from tests.profile.test_extract_profile import PROFILE

    out = tmp_path_factory.mktemp("one") / "s"
    neurondb.extract(relu_model, str(sentiment_dir), out, **PROFILE).close()
    return out
