"""The tokens table of a batch (neurondb.extract.tokens) against a per-example reference
(the tokenizer asked token by token), for an encoder with a soft prompt and a mask, a causal
model, a seq2seq model (its decoder row) and a Llama-style tokenizer; and ids the tokenizer's
vocabulary lookup does not cover."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from neurondb.extract.tokens import TokensTableBuilder
from neurondb.runtime.encode import Encoder
from neurondb.runtime.forward import decoder_start_id
from neurondb.runtime.model import load_model
from neurondb.runtime.templates import Template
from neurondb.store.run import TOKENS_SCHEMA

TEXTS = ["a fine film", "dull , dull and long", "ok", "the [MASK] cast is <unk> great !"]


def reference(tok, enc: Encoder, stack: str, start: int | None, run: str, batch, ids) -> list:
    rows = []
    P = enc.n_prompt
    for i, ex in enumerate(ids):
        n = int(batch.lengths[i])
        tid = batch.enc["input_ids"][i, :n].tolist()
        for j in range(P):
            rows.append((run, int(ex), stack, j, -1, f"<prompt:{j}>", "prompt"))
        for j, t in enumerate(tid):
            kind = ("mask" if t == enc.mask_id else
                    "special" if t in set(tok.all_special_ids) else "input")
            rows.append((run, int(ex), stack, P + j, t, tok.convert_ids_to_tokens(t), kind))
        if start is not None:
            rows.append((run, int(ex), "decoder", 0, start, tok.convert_ids_to_tokens(start),
                         "special"))
    return rows


@pytest.mark.parametrize("family,readout,n_prompt", [("bert", "mlm", 3), ("bert", "mlm", 0),
                                                     ("gpt2", "causal", 2), ("t5", "seq2seq", 0),
                                                     ("llama", "causal", 0)])
def test_tokens_table_equals_the_per_example_reference(tiny_path, family, readout, n_prompt):
    lm = load_model(str(tiny_path(family)), readout, "cpu")
    template = "{text} It was {mask}." if readout != "causal" else "{text} It was"
    enc = Encoder(lm.tokenizer, Template(template), lm.readout, n_prompt, 128)
    ids = np.array([7, 2, 11, 0])
    batch = enc.encode(ids, [[t] for t in TEXTS])
    stack = lm.adapter.stacks[0].name
    start = decoder_start_id(lm.model.config) if lm.is_seq2seq else None
    got = TokensTableBuilder(lm.tokenizer, enc, stack, start).build("r1", batch, ids)
    want = reference(lm.tokenizer, enc, stack, start, "r1", batch, ids)
    assert got.num_rows == len(want)
    assert got.cast(TOKENS_SCHEMA).schema == TOKENS_SCHEMA
    assert list(zip(*[got.column(c).to_pylist() for c in TOKENS_SCHEMA.names])) == want
    if readout == "mlm":
        masked = {e for e, k in zip(got.column("example_id").to_pylist(),
                                    got.column("kind").to_pylist()) if k == "mask"}
        assert masked == set(ids.tolist())  # the template's mask (and one typed in a text)
    if n_prompt:
        assert got.column("kind").to_pylist().count("prompt") == n_prompt * len(ids)


def test_ids_past_the_vocabulary_are_asked_of_the_tokenizer(tiny_path):
    lm = load_model(str(tiny_path("bert")), "mlm", "cpu")
    enc = Encoder(lm.tokenizer, Template("{text} It was {mask}."), lm.readout, 0, 128)
    b = TokensTableBuilder(lm.tokenizer, enc, "encoder")
    n = len(lm.tokenizer)
    ids = np.array([0, n - 1, n + 5, 3])
    assert list(b.token_strings(ids)) == [lm.tokenizer.convert_ids_to_tokens(int(i))
                                          for i in ids]
    assert isinstance(b.build("r", enc.encode(np.array([0]), [["x"]]), np.array([0])), pa.Table)
