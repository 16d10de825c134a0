"""Fixtures shared by the profile tests."""

from __future__ import annotations

import pytest

from neurondb.testing import save_tiny


@pytest.fixture(scope="package")
def relu_model(tmp_path_factory) -> str:
    """A tiny BERT with ReLU FFNs (many exact zeros: ties in the top/bottom-K)."""
    return str(save_tiny("bert", tmp_path_factory.mktemp("relu") / "m", head="base",
                         hidden_act="relu"))
