"""Run names a person can read and type: ``<data>-<split>-seed<k>`` for a tuned prompt, with
the prompt's sha256 in the run's metadata; a second prompt of the same seed is told apart."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import save_file

import neurondb
from neurondb.runtime.prompt import load_prompt
from neurondb.tune import tune_prompt

KW = dict(template="{text} It was {mask}.", verbalizer=["bad", "good"], progress=False)


def _tuned(model, data, out, lr):
    return tune_prompt(str(model), str(data), out, prompt_tokens=2, seeds=(1,), epochs=1,
                       lr=lr, **KW)[0]


def test_tuned_prompts_name_their_seed(tiny_path, sentiment_dir, tmp_path):
    model = tiny_path("bert")
    p1 = _tuned(model, sentiment_dir, tmp_path / "a", 0.01)
    p2 = _tuned(model, sentiment_dir, tmp_path / "b", 0.3)  # seed 1 too, another prompt
    store = tmp_path / "s"
    neurondb.extract(str(model), str(sentiment_dir), store, prompt=str(p1), **KW)
    s = neurondb.extract(str(model), str(sentiment_dir), store, prompt=str(p2), **KW)
    runs = {r.run: r for r in s.runs()}
    tag = sentiment_dir.name
    first, second = f"{tag}-validation-seed1", f"{tag}-validation-seed1-p"
    assert first in runs
    assert runs[first].prompt_hash == load_prompt(p1).sha256
    (other,) = [r for r in runs if r.startswith(second)]
    assert runs[other].prompt_hash == load_prompt(p2).sha256
    # the same command again resumes nothing and refuses (it names the run it has)
    again = neurondb.open(store)
    assert len(again.runs()) == 2


def test_a_prompt_without_a_seed_is_named_by_its_hash(tiny_path, sentiment_dir, tmp_path):
    f = tmp_path / "p.safetensors"
    save_file({"prompt": torch.from_numpy(np.zeros((2, 32), np.float32))}, f)
    s = neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), tmp_path / "s",
                         prompt=str(f), **KW)
    (run,) = s.runs()
    assert run.run == f"{sentiment_dir.name}-validation-p{load_prompt(f).sha256[:8]}"
