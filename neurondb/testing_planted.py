"""A tiny BERT whose sentiment decision is carried by two planted FFN neurons, by construction.

The label is read by a soft prompt's head (mean pool) along one residual direction ``u``.
Nothing but the planted neurons writes to ``u``:

* embeddings (word, position, type) have no ``u`` component and only the sentiment words have
  a component along a second direction ``g`` (``+g`` positive, ``-g`` negative);
* attention writes nothing (its output projection is zero), so each token stays itself;
* in layer 0, neuron ``POS`` fires on ``+g`` and writes ``+u``, neuron ``NEG`` fires on ``-g``
  and writes ``-u``; every other neuron's output column (and every output bias) has no ``u``;
* LayerNorms have unit gain and zero bias, and ``u`` is orthogonal to the all-ones vector, so
  normalisation rescales the ``u`` component but never creates or flips it.

So the head's margin is ``+`` on positive and ``-`` on negative sentences: accuracy 1.0. With
both planted neurons suppressed the ``u`` component is zero everywhere, the head's bias breaks
the tie towards label 0, and accuracy falls to the share of label 0 (0.5 on balanced data).
Suppressing any other neurons leaves the sign of the ``u`` component unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from neurondb.testing import tiny_model

POSITIVE = ("great", "good", "wonderful", "best", "love", "fine", "funny")
NEGATIVE = ("terrible", "bad", "awful", "worst", "hate", "boring", "dull")
NEUTRAL = ("the", "movie", "film", "story", "plot", "was", "is", "this", "it", "very", "acting",
           "scene", "music", "a", "of")
POS_NEURON, NEG_NEURON = 7, 30
LAYER = 0


@dataclass
class PlantedSentiment:
    """Paths of the planted model, its prompt (with head) and a ``train``/``validation`` data
    directory; ``neurons``: ``{("encoder", 0): [POS_NEURON, NEG_NEURON]}``."""

    model_dir: Path
    prompt_dir: Path
    data_dir: Path
    neurons: dict[tuple[str, int], list[int]]


def _orthonormal(d: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two orthonormal vectors, both orthogonal to the all-ones vector."""
    basis = [np.ones(d) / np.sqrt(d)]
    out = []
    for _ in range(2):
        v = rng.standard_normal(d)
        for b in basis:
            v -= (v @ b) * b
        v /= np.linalg.norm(v)
        basis.append(v)
        out.append(torch.tensor(v, dtype=torch.float32))
    return out[0], out[1]


def sentences(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` sentences (balanced labels), each with one sentiment word among neutral ones."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(NEUTRAL, size=int(rng.integers(3, 7))))
        word = rng.choice(POSITIVE if label else NEGATIVE)
        words.insert(int(rng.integers(0, len(words) + 1)), str(word))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def build_planted(root: str | Path, n_train: int = 40, n_validation: int = 40,
                  seed: int = 0) -> PlantedSentiment:
    """Write the planted model, prompt and data under ``root``."""
    from neurondb.runtime.prompt import SoftPrompt
    from neurondb.store.manifest import model_fingerprint

    root = Path(root)
    model, tok = tiny_model("bert", head="base", seed=seed)
    d = model.config.hidden_size
    u, g = _orthonormal(d, np.random.default_rng(seed + 1))
    no_u = torch.eye(d) - torch.outer(u, u)
    no_ug = no_u - torch.outer(g, g)
    vocab = tok.get_vocab()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        emb = model.embeddings
        emb.word_embeddings.weight.copy_(emb.word_embeddings.weight @ no_ug)
        for w in POSITIVE:
            emb.word_embeddings.weight[vocab[w]] += g
        for w in NEGATIVE:
            emb.word_embeddings.weight[vocab[w]] -= g
        emb.position_embeddings.weight.copy_(emb.position_embeddings.weight @ no_ug)
        emb.token_type_embeddings.weight.copy_(emb.token_type_embeddings.weight @ no_ug)
        for i, layer in enumerate(model.encoder.layer):
            layer.attention.output.dense.weight.zero_()
            layer.attention.output.dense.bias.zero_()
            w_in, w_out = layer.intermediate.dense, layer.output.dense
            w_out.weight.copy_(no_u @ w_out.weight)
            w_out.bias.copy_(no_u @ w_out.bias)
            if i == LAYER:
                for n, sign in ((POS_NEURON, 1.0), (NEG_NEURON, -1.0)):
                    w_in.weight[n] = 4.0 * sign * g
                    w_in.bias[n] = -8.0
                    w_out.weight[:, n] = sign * u
    model_dir = root / "planted-model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    head_w = torch.stack([-u, u]) * 10.0
    head_b = torch.tensor([1e-3, 0.0])
    prompt = SoftPrompt(embeddings=torch.zeros(1, d), head_weight=head_w, head_bias=head_b,
                        meta={"pool": "mean", "model": str(model_dir),
                              "model_path": str(model_dir), "readout": "head",
                              "template": "{text}", "labels": ["negative", "positive"],
                              "n_classes": 2, "model_fingerprint": model_fingerprint(model)})
    prompt_dir = prompt.save(root / "planted-prompt")
    data_dir = root / "planted-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, seed + 10), ("validation", n_validation, seed + 20)):
        texts, labels = sentences(n, s)
        pq.write_table(pa.table({"sentence": texts, "label": labels,
                                 "idx": list(range(n))}), data_dir / f"{split}.parquet")
    return PlantedSentiment(model_dir=model_dir, prompt_dir=prompt_dir, data_dir=data_dir,
                            neurons={("encoder", LAYER): [POS_NEURON, NEG_NEURON]})
