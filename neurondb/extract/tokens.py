"""A batch's rows of the ``tokens`` table (``TOKENS_SCHEMA``), built with array operations.

One row per position of each example: the soft prompt's ``P`` positions first (``token_id``
-1, ``token`` ``<prompt:j>``, ``kind`` ``prompt``), then its ``n`` input tokens (``kind``
``mask`` / ``special`` / ``input``, by :meth:`Encoder.token_kinds`), and for a seq2seq model
one ``decoder`` row at position 0 (the decoder start token, ``special``). Token strings come
from the tokenizer's vocabulary, looked up once per run (a per-token Python loop cost about
4 % of a capture's time on the CPU).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


class TokensTableBuilder:
    """``build(run, batch, ids)`` -> a ``pa.Table`` of the batch's token rows.

    ``tokenizer``: a Hugging Face tokenizer; ``encoder``: the run's
    :class:`~neurondb.runtime.encode.Encoder` (prompt length, token kinds); ``stack``: the
    input stack's name; ``decoder_start``: the decoder start token id of a seq2seq model, or
    None.
    """

    def __init__(self, tokenizer, encoder, stack: str, decoder_start: int | None = None):
        self.tok = tokenizer
        self.encoder = encoder
        self.stack = stack
        self.decoder_start = decoder_start
        self._vocab: np.ndarray | None = None

    def token_strings(self, token_ids: np.ndarray) -> np.ndarray:
        """``[n]`` token ids -> ``[n]`` object array of their strings (None where the
        tokenizer has none)."""
        if self._vocab is None:
            self._vocab = np.array(self.tok.convert_ids_to_tokens(list(range(len(self.tok)))) +
                                   [None], dtype=object)
        ids = np.asarray(token_ids, dtype=np.int64)
        n = len(self._vocab) - 1
        inside = (ids >= 0) & (ids < n)
        out = self._vocab[np.where(inside, ids, n)]
        if not inside.all():  # ids past the tokenizer's length (not from it): ask it
            rest = np.flatnonzero(~inside)
            out[rest] = self.tok.convert_ids_to_tokens([int(i) for i in ids[rest]])
        return out

    def build(self, run: str, batch, ids: np.ndarray) -> pa.Table:
        """``batch``: an encoded batch (``enc["input_ids"]`` ``[B, T]``, ``lengths`` ``[B]``
        without the prompt); ``ids``: its ``[B]`` example ids."""
        P = self.encoder.n_prompt
        lengths = np.asarray(batch.lengths, dtype=np.int64)
        input_ids = batch.enc["input_ids"].numpy()
        B = len(ids)
        per = lengths + P  # rows per example
        start = np.concatenate([[0], np.cumsum(per)[:-1]]).astype(np.int64)
        total = int(per.sum())
        example = np.repeat(np.asarray(ids, dtype=np.int64), per)
        position = np.arange(total, dtype=np.int64) - np.repeat(start, per)
        is_prompt = position < P
        inputs = np.flatnonzero(~is_prompt)
        token_id = np.full(total, -1, dtype=np.int64)
        token_id[inputs] = input_ids[np.repeat(np.arange(B), per)[inputs], position[inputs] - P]
        token = np.empty(total, dtype=object)
        kind = np.empty(total, dtype=object)
        token[inputs] = self.token_strings(token_id[inputs])
        kind[inputs] = self.encoder.token_kinds(token_id[inputs])
        if P:
            prompt_rows = np.flatnonzero(is_prompt)
            names = np.array([f"<prompt:{j}>" for j in range(P)], dtype=object)
            token[prompt_rows] = names[position[prompt_rows]]
            kind[prompt_rows] = "prompt"
        stack = np.full(total, self.stack, dtype=object)
        if self.decoder_start is not None:  # one decoder row per example, after its inputs
            at = start + per  # insertion points (before the next example's first row)
            start_tok = self.token_strings(np.array([self.decoder_start]))[0]
            example = np.insert(example, at, np.asarray(ids, dtype=np.int64))
            position = np.insert(position, at, 0)
            token_id = np.insert(token_id, at, self.decoder_start)
            token = np.insert(token, at, start_tok)
            kind = np.insert(kind, at, "special")
            stack = np.insert(stack, at, "decoder")
        n = len(example)
        return pa.table({
            "run": pa.array(np.full(n, run, dtype=object), pa.string()),
            "example_id": example, "stack": pa.array(stack, pa.string()),
            "position": position.astype(np.int32), "token_id": token_id.astype(np.int32),
            "token": pa.array(token, pa.string()), "kind": pa.array(kind, pa.string()),
        })
