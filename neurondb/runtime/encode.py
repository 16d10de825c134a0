"""Turning examples into model inputs and choosing the positions to capture.

Positions are 0-based indices into the model's input sequence, soft-prompt tokens
included (prompt tokens are ``0..P-1``). Every captured token gets one *slot*, the key
that aligns tokens across examples: ``prompt:<i>``, ``mask`` (where the label is read),
``first`` (first token after the prompt), ``last`` (last real token), ``pos:<i>``
(absolute position, when capturing ``all``), and ``dec:<i>`` for decoder steps of an
encoder-decoder. A token picked by several rules takes the first of that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neurondb.errors import ExtractError, arg, given
from neurondb.runtime.readouts import get_readout
from neurondb.runtime.templates import Template

POSITION_KINDS = ("prompt", "mask", "first", "last", "all")


def parse_positions(spec: str | list[str] | None, name: str = "positions") -> list[str]:
    """The position kinds of ``spec`` (a comma list or a list; None: prompt and mask), in
    order, once each; anything else is a one-line error naming the argument ``name``."""
    if spec is None:
        return ["prompt", "mask"]
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = [s.strip() for s in items if s.strip()]
    bad = [s for s in out if s not in POSITION_KINDS]
    if bad or not out:
        raise ExtractError(f"{arg(name)} takes a comma list of {', '.join(POSITION_KINDS)}; "
                           f"got {spec!r}")
    return list(dict.fromkeys(out))


@dataclass
class Batch:
    """One batch. Token tensors ``[B, T]`` exclude the soft prompt; ``readout_pos`` ``[B]``
    is the absolute position (prompt included) where the label is read, or -1."""

    example_ids: np.ndarray
    texts: list[str]
    enc: dict[str, torch.Tensor]
    lengths: np.ndarray
    readout_pos: np.ndarray
    mask_tok_pos: np.ndarray


@dataclass
class Selection:
    """Captured rows of one stack: ``b`` (batch index) and ``t`` (position) ``[n_rows]``."""

    b: np.ndarray
    t: np.ndarray
    slots: list[str]


class Encoder:
    """Renders templates, tokenizes with truncation that keeps the mask, finds positions."""

    def __init__(self, tokenizer, template: Template, readout: str, n_prompt: int,
                 max_length: int):
        self.tok = tokenizer
        self.template = template
        self.readout = readout
        self.strategy = get_readout(readout)
        self.n_prompt = n_prompt
        self.max_length = max_length
        self.mask_token = self._mask_token()
        self.mask_id = (tokenizer.convert_tokens_to_ids(self.mask_token)
                        if self.mask_token else None)
        self.special_ids = set(tokenizer.all_special_ids)

    def _mask_token(self) -> str | None:
        if not self.strategy.fills_mask:
            return None
        if not self.template.has_mask:
            return None
        mt = getattr(self.tok, "mask_token", None)
        if mt:
            return mt
        sentinel = "<extra_id_0>"
        if sentinel in self.tok.get_vocab():
            return sentinel
        if self.strategy.needs_mask:
            raise ExtractError(f"the tokenizer has no mask token; the {self.readout} readout "
                               "needs one")
        return ""

    def render(self, fields: list[str]) -> str:
        return self.template.render(fields, self.mask_token)

    def _tokenize(self, texts: list[str]) -> dict:
        return self.tok(texts, add_special_tokens=True, truncation=False)

    def lengths(self, all_fields: list[list[str]], chunk: int = 4096) -> np.ndarray:
        """Token counts (without prompt) of every example, for sorting and size estimates."""
        out = np.empty(len(all_fields), dtype=np.int64)
        for i in range(0, len(all_fields), chunk):
            enc = self._tokenize([self.render(f) for f in all_fields[i:i + chunk]])
            out[i:i + chunk] = [min(len(x), self.max_length) for x in enc["input_ids"]]
        return out

    def _fit(self, fields: list[str], n: int) -> str:
        """Re-render with the longest text field shortened until the tokens fit; ``n`` is the
        token count of the full rendering."""
        fields = list(fields)
        for _ in range(8):
            longest = max(range(len(fields)), key=lambda i: len(fields[i])) if fields else None
            if longest is None or not fields[longest]:
                break
            ids = self.tok.encode(fields[longest], add_special_tokens=False)
            keep = max(0, len(ids) - (n - self.max_length) - 1)
            fields[longest] = self.tok.decode(ids[:keep])
            text = self.render(fields)
            n = len(self._tokenize([text])["input_ids"][0])
            if n <= self.max_length:
                return text
        raise ExtractError("the template alone is longer than "
                           f"{given('max_length', self.max_length)}")

    def encode(self, example_ids: np.ndarray, fields: list[list[str]]) -> Batch:
        texts = [self.render(f) for f in fields]
        enc = self.tok(texts, add_special_tokens=True, padding=True, return_tensors="pt")
        counts = enc["attention_mask"].sum(1).tolist()
        if max(counts, default=0) > self.max_length:  # tokenized once more, shortened
            texts = [t if n <= self.max_length else self._fit(f, n)
                     for t, n, f in zip(texts, counts, fields)]
            enc = self.tok(texts, add_special_tokens=True, padding=True, return_tensors="pt")
        enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        ids = enc["input_ids"].numpy()
        lengths = enc["attention_mask"].sum(1).numpy().astype(np.int64)
        P = self.n_prompt
        mask_tok = np.full(len(texts), -1, dtype=np.int64)
        if self.mask_id is not None:
            for b in range(len(texts)):
                hits = np.flatnonzero(ids[b, :lengths[b]] == self.mask_id)
                if hits.size:
                    mask_tok[b] = P + hits[0]
        if self.strategy.needs_mask and (mask_tok < 0).any():
            raise ExtractError("an example lost its mask token (truncated?); raise "
                               f"{arg('max_length')}")
        readout_pos = self.strategy.read_positions(lengths, mask_tok, P)
        return Batch(example_ids=np.asarray(example_ids), texts=texts, enc=enc, lengths=lengths,
                     readout_pos=readout_pos, mask_tok_pos=mask_tok)

    def select(self, batch: Batch, positions: list[str]) -> Selection:
        """Captured rows of the input stack, example-major, in increasing position."""
        P = self.n_prompt
        bs: list[int] = []
        ts: list[int] = []
        slots: list[str] = []
        for b in range(len(batch.texts)):
            n = int(batch.lengths[b])
            chosen: dict[int, str] = {}

            def pick(t: int, slot: str, chosen=chosen) -> None:
                if t >= 0 and t not in chosen:
                    chosen[t] = slot

            for kind in ("prompt", "mask", "first", "last", "all"):
                if kind not in positions:
                    continue
                if kind == "prompt":
                    for i in range(P):
                        pick(i, f"prompt:{i}")
                elif kind == "mask":
                    pick(int(batch.readout_pos[b]), "mask")
                elif kind == "first":
                    pick(P, "first")
                elif kind == "last":
                    pick(P + n - 1, "last")
                else:
                    for t in range(P + n):
                        pick(t, f"prompt:{t}" if t < P else f"pos:{t}")
            for t in sorted(chosen):
                bs.append(b)
                ts.append(t)
                slots.append(chosen[t])
        return Selection(b=np.asarray(bs, dtype=np.int64), t=np.asarray(ts, dtype=np.int64),
                         slots=slots)

    def token_kinds(self, ids) -> np.ndarray:
        """``[n]`` token ids -> ``[n]`` object array of ``mask`` / ``special`` / ``input``."""
        ids = np.asarray(ids, dtype=np.int64)
        kinds = np.full(len(ids), "input", dtype=object)
        kinds[np.isin(ids, np.fromiter(self.special_ids, np.int64))] = "special"
        if self.mask_id is not None:
            kinds[ids == self.mask_id] = "mask"
        return kinds


def resolve_positions(positions: list[str], n_prompt: int, has_readout_pos: bool) -> list[str]:
    """Drop kinds that do not apply (no prompt, no mask); fall back to ``first``."""
    out = [p for p in positions if not (p == "prompt" and n_prompt == 0)
           and not (p == "mask" and not has_readout_pos)]
    return out or ["first"]
