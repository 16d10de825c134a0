"""Fixtures for prompt tuning: tiny models whose output depends on the prompt.

A tiny BERT with the default initializer range (0.02) has near-uniform attention and
label logits within ~0.05 of each other: no prompt can move them. With
``initializer_range=0.5`` the same architecture is sensitive enough that a 4-token prompt
learns the keyword sentiment task of ``sentiment_dir`` in a few epochs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from neurondb.testing import save_tiny


@pytest.fixture(scope="session")
def sharp_path(models_dir):
    """``sharp_path(head="lm", seed=0)`` -> a saved tiny BERT with initializer range 0.5."""
    cache: dict = {}

    def make(head: str = "lm", seed: int = 0) -> Path:
        if (head, seed) not in cache:
            cache[(head, seed)] = save_tiny("bert", models_dir / f"sharp-bert-{head}-{seed}",
                                            head=head, seed=seed, initializer_range=0.5)
        return cache[(head, seed)]

    return make
