"""How many bytes an extraction writes, shard by shard, and how many are still to write.

An extraction cuts a run's examples (longest first) into chunks of ``chunk_examples``; each
chunk is one shard (:mod:`neurondb.store.run`) holding, in ``tokens`` mode,

- ``activations.h5`` (and ``gradients.h5`` with ``--grad``): per ``(stack, layer)`` a dataset
  ``[rows, d_ff]`` in chunks of ``[chunk_rows, 64]`` (:mod:`neurondb.store.tensors`). HDF5
  allocates whole chunks, so a shard's rows are rounded **up** to a multiple of
  ``chunk_rows`` and its width up to a multiple of 64: the naive ``rows x d_ff x itemsize``
  is low by up to a chunk row per dataset (the 24 % of the issue). The metadata (superblock,
  object headers, the chunk B-trees) is measured: ~6 kB a file, ~3.1 kB a dataset, ~47 B a
  chunk;
- ``examples.parquet``, ``tokens.parquet``, ``rows.parquet``: zstd Parquet, one row group per
  batch (per stack for the rows). Their sizes are linear fits to real writes (tiny BERT and
  GPT-2 stores, 3 to 1,000 examples a shard, batch 2 to 32; every table within 5.3 %):
  a fixed part, a part per row group, a part per row, and for the examples the zstd size of
  the texts, batch by batch (measured here, so a dataset's own compressibility counts);
- ``shard.json`` (~0.8 kB);

and in ``stats`` mode the examples table and ``stats.h5`` (sums, sums of squares and per-label
sums, float64 ``[slots, d_ff]`` per layer). Run-level files (``run.json``, ``run.parquet``,
the manifest, the catalog) add ~12 kB a run.

:func:`plan_run` gives the bytes of every shard of a run; :func:`bytes_to_write` the bytes of
the shards not yet complete (what a resumed run still needs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from neurondb.runtime.batches import longest_first
from neurondb.store.codec import numpy_storage_dtype
from neurondb.store.tensors import NEURON_CHUNK, chunk_rows_for

# HDF5 tensor files (measured with h5py 3 / HDF5 1.14, libver default)
H5_FILE = 6_000
H5_DATASET = 3_100
H5_CHUNK_INDEX = 47
# stats.h5
STATS_FILE = 9_000
STATS_LAYER = 2_000
STATS_STACK = 3_500
STATS_SLOT_NAME = 12
# Parquet tables: bytes = fixed + per_row_group * groups + per_row * rows (+ text)
EXAMPLES_FIXED, EXAMPLES_GROUP, EXAMPLES_ROW, EXAMPLES_TEXT = 723.0, 2314.5, 5.44, 1.647
EXAMPLES_LOGIT = 4.0  # bytes per label logit beyond the two of the fit (float32, random bits)
TOKENS_FIXED, TOKENS_GROUP, TOKENS_ROW = 451.5, 1758.1, 1.523
ROWS_FIXED, ROWS_GROUP, ROWS_ROW = 628.6, 1324.6, 2.879
SHARD_JSON = 800
RUN_FILES = 12_000  # run.json, run.parquet, catalog entry, manifest share


@dataclass(frozen=True)
class ShardShape:
    """What one chunk writes: ``n`` examples in ``batches`` batches, ``rows`` captured rows
    per stack, ``tokens`` rows of the tokens table, ``text_zstd`` zstd bytes of its texts
    (batch by batch), ``slots`` distinct captured slots per stack (stats mode)."""

    n: int
    batches: int
    rows: dict[str, int]
    tokens: int
    text_zstd: int
    slots: dict[str, int]


def hdf5_tensor_bytes(widths: dict[str, Sequence[int]], rows: dict[str, int], dtype: str) -> int:
    """Size of one ``activations.h5``/``gradients.h5`` of a shard with ``rows`` rows per
    stack, as :class:`~neurondb.store.tensors.TensorWriter` lays it out (whole chunks)."""
    item = numpy_storage_dtype(dtype).itemsize
    total = H5_FILE
    for stack, ws in widths.items():
        r = int(rows.get(stack, 0))
        for d in ws:
            cr = chunk_rows_for(int(d), item, r)
            cw = min(NEURON_CHUNK, int(d))
            n_chunks = -(-r // cr) * -(-int(d) // cw)
            total += H5_DATASET + n_chunks * (cr * cw * item + H5_CHUNK_INDEX)
    return int(total)


def stats_file_bytes(widths: dict[str, Sequence[int]], slots: dict[str, int],
                     n_labels: int) -> int:
    """Size of a shard's ``stats.h5``: float64 sum and sumsq ``[S, d]`` and label sums
    ``[C, S, d]`` per layer, counts per stack."""
    c = max(1, int(n_labels))
    total = STATS_FILE + STATS_STACK * max(0, len(widths) - 1)
    for stack, ws in widths.items():
        s = int(slots.get(stack, 1))
        total += STATS_SLOT_NAME * s + 8 * s * (1 + c)
        for d in ws:
            total += STATS_LAYER + 8 * s * int(d) * (2 + c)
    return int(total)


def examples_bytes(n: int, batches: int, text_zstd: int, n_labels: int) -> int:
    """``examples.parquet`` of ``n`` examples written in ``batches`` row groups."""
    if n == 0:
        return int(EXAMPLES_FIXED)
    extra = EXAMPLES_LOGIT * n * max(0, int(n_labels) - 2)
    return int(EXAMPLES_FIXED + EXAMPLES_GROUP * batches + EXAMPLES_ROW * n
               + EXAMPLES_TEXT * text_zstd + extra)


def tokens_bytes(n_tokens: int, batches: int) -> int:
    return int(TOKENS_FIXED + (TOKENS_GROUP * batches + TOKENS_ROW * n_tokens if n_tokens else 0))


def rows_bytes(n_rows: int, groups: int) -> int:
    return int(ROWS_FIXED + (ROWS_GROUP * groups + ROWS_ROW * n_rows if n_rows else 0))


def shard_bytes(sh: ShardShape, widths: dict[str, Sequence[int]], *, mode: str = "tokens",
                dtype: str = "float16", grad: bool = False, n_labels: int = 2,
                profile: tuple[int, int, int] = (20, 256, 0)) -> int:
    """Bytes of one complete shard directory (``profile``: top_k, bins and correlated
    neurons of a profile run)."""
    total = SHARD_JSON + examples_bytes(sh.n, sh.batches, sh.text_zstd, n_labels)
    if mode == "stats":
        return total + stats_file_bytes(widths, sh.slots, n_labels)
    if mode == "profile":
        from neurondb.profile.state import profile_file_bytes

        return (total + tokens_bytes(sh.tokens, sh.batches)
                + profile_file_bytes(widths, profile[0], profile[1], n_labels, profile[2]))
    groups = sh.batches * sum(1 for s in widths if sh.rows.get(s, 0))
    total += tokens_bytes(sh.tokens, sh.batches) + rows_bytes(sum(sh.rows.values()), groups)
    total += hdf5_tensor_bytes(widths, sh.rows, dtype) * (2 if grad else 1)
    return int(total)


def chunk_order(lengths: np.ndarray, chunk_examples: int) -> list[np.ndarray]:
    """The example indices of each chunk: longest first (stable), ``chunk_examples`` each,
    as :meth:`neurondb.extract.run.Extraction._capture_run` cuts them."""
    order = longest_first(lengths)
    c = max(1, int(chunk_examples))
    return [order[i:i + c] for i in range(0, len(order), c)] or [order]


def zstd_bytes(texts: Iterable[str]) -> int:
    """zstd-compressed size of the texts joined by newlines (one batch's text column)."""
    data = "\n".join(texts).encode("utf-8", "replace")
    return len(pa.compress(data, "zstd")) if data else 0


def shard_shapes(lengths: np.ndarray, texts: Sequence[str], *,
                 rows_fn: Callable[[np.ndarray], dict[str, int]], chunk_examples: int,
                 batch_size: int, n_prompt: int = 0,
                 slots_fn: Callable[[np.ndarray], dict[str, int]] | None = None,
                 seq2seq: bool = False) -> list[ShardShape]:
    """What every shard of a run holds, in chunk order (independent of the storage dtype).

    ``lengths``: tokens per example without the prompt (``Encoder.lengths``); ``texts``: the
    rendered text of each example (what the examples table stores); ``rows_fn(lengths of a
    chunk)``: captured rows per stack (``_Extraction.expected_rows``); ``slots_fn``: distinct
    slots per stack in stats mode (default: rows of one example).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    out = []
    bs = max(1, int(batch_size))
    for chunk in chunk_order(lengths, chunk_examples):
        n = len(chunk)
        batches = -(-n // bs)
        z = sum(zstd_bytes(texts[int(i)] for i in chunk[b:b + bs]) for b in range(0, n, bs))
        rows = rows_fn(lengths[chunk]) if n else {}
        tokens = int(lengths[chunk].sum()) + n * int(n_prompt) + (n if seq2seq else 0)
        if slots_fn is not None:
            slots = slots_fn(lengths[chunk])
        else:
            slots = {s: max(1, -(-r // max(1, n))) for s, r in rows.items()}
        out.append(ShardShape(n=n, batches=batches, rows=rows, tokens=tokens, text_zstd=z,
                              slots=slots))
    return out


def plan_run(lengths: np.ndarray, texts: Sequence[str], widths: dict[str, Sequence[int]], *,
             rows_fn: Callable[[np.ndarray], dict[str, int]], chunk_examples: int,
             batch_size: int, n_prompt: int = 0, mode: str = "tokens", dtype: str = "float16",
             grad: bool = False, n_labels: int = 2, slots_fn: Callable[[np.ndarray], dict[str, int]]
             | None = None, seq2seq: bool = False) -> list[int]:
    """Bytes of every shard of a run, in chunk order (:func:`shard_shapes` stored in
    ``dtype``)."""
    shapes = shard_shapes(lengths, texts, rows_fn=rows_fn, chunk_examples=chunk_examples,
                          batch_size=batch_size, n_prompt=n_prompt, slots_fn=slots_fn,
                          seq2seq=seq2seq)
    return [shard_bytes(sh, widths, mode=mode, dtype=dtype, grad=grad, n_labels=n_labels)
            for sh in shapes]


def bytes_to_write(per_shard: Sequence[int], done: Iterable[int] = (),
                   run_files: bool = True) -> int:
    """Bytes still to write for a run whose shards ``done`` (chunk numbers) are complete:
    the other shards, plus the run-level files unless ``run_files`` is False."""
    done = set(int(k) for k in done)
    rest = sum(int(b) for k, b in enumerate(per_shard) if k not in done)
    return int(rest + (RUN_FILES if run_files else 0))


def slots_fn_for(positions: Sequence[str], n_prompt: int, in_stack: str,
                 seq2seq: bool = False) -> Callable[[np.ndarray], dict[str, int]]:
    """Distinct captured slots per stack of a stats-mode chunk with these ``lengths``:
    ``prompt:i`` for each prompt token, ``mask``/``first``/``last``, and with ``all`` one
    ``pos:t`` per position of the longest example."""

    def slots(lengths: np.ndarray) -> dict[str, int]:
        if "all" in positions:
            s = int(n_prompt) + (int(np.max(lengths)) if len(lengths) else 0)
        else:
            s = (int(n_prompt) if "prompt" in positions else 0) + sum(
                1 for k in ("mask", "first", "last") if k in positions)
        out = {in_stack: max(1, s)}
        if seq2seq:
            out["decoder"] = 1
        return out

    return slots


def _positions(ext, mode: str) -> list[str]:
    """The positions of a run of ``mode`` (a profile's per-token twin has its own)."""
    return ext.positions_for(mode) if hasattr(ext, "positions_for") else ext.positions


def _job_shapes(ext, data, lengths: np.ndarray, mode: str = "tokens") -> list[ShardShape]:
    """:func:`shard_shapes` of one run of an ``_Extraction`` (``neurondb.extract.run``)."""
    enc, cfg = ext.encoder, ext.cfg
    seq2seq = bool(ext.lm.is_seq2seq)
    positions = _positions(ext, mode)
    return shard_shapes(
        lengths, [enc.render(f) for f in data.texts],
        rows_fn=lambda ln: ext.expected_rows(ln, positions),
        chunk_examples=cfg.chunk_examples, batch_size=cfg.batch_size, n_prompt=enc.n_prompt,
        slots_fn=slots_fn_for(positions, enc.n_prompt, ext.shape.stacks[0], seq2seq),
        seq2seq=seq2seq)


def _job_bytes(ext, data, shapes: list[ShardShape], mode: str, dtype: str | None) -> list[int]:
    own = ext.dtype_for(mode) if hasattr(ext, "dtype_for") else getattr(ext, "dtype", None)
    dtype = dtype or own or ext.cfg.dtype  # the resolved storage dtype
    return [shard_bytes(sh, ext.shape.widths, mode=mode, dtype=dtype,
                        grad=bool(ext.cfg.grad and mode == "tokens"),
                        n_labels=max(2, len(data.label_names)),
                        profile=_profile_shape(ext)) for sh in shapes]


def _profile_shape(ext) -> tuple[int, int, int]:
    """``(top_k, bins, correlated neurons)`` of an extraction's profile run."""
    layers = ext.cfg.correlate_layers or []
    stack = ext.shape.stacks[0]
    d = sum(ext.shape.d_ff(stack, int(la)) for la in dict.fromkeys(layers)
            if 0 <= int(la) < ext.shape.n_layers(stack))
    return int(ext.cfg.top_k), int(ext.cfg.profile_bins), d


def plan_job(ext, data, lengths: np.ndarray, mode: str, dtype: str | None = None) -> list[int]:
    """:func:`plan_run` for one run of an ``_Extraction`` (``neurondb.extract.run``):
    ``data`` a ``LoadedData``, ``lengths`` its ``Encoder.lengths``, ``mode`` tokens/stats;
    ``dtype``: another storage dtype than the extraction's (what it would cost)."""
    return _job_bytes(ext, data, _job_shapes(ext, data, lengths, mode), mode, dtype)


def extraction_sizes(ext, lengths: Sequence[np.ndarray], done: Sequence[Iterable[int]] | None
                     = None, dtypes: Sequence[str | None] = (None,)) -> dict:
    """``{dtype: (total, still_to_write)}`` bytes of all runs of an ``_Extraction``
    (``ext.jobs``, ``lengths`` per job) stored in each of ``dtypes`` (``None``: the
    extraction's own); ``done[j]``: the complete chunks of job ``j`` (default: none). The
    texts are rendered and compressed once, whatever the number of dtypes."""
    out = {d: [0, 0] for d in dtypes}
    for j, ((data, mode, _name), lens) in enumerate(zip(ext.jobs, lengths)):
        shapes = _job_shapes(ext, data, lens, mode)
        # a profile run of several shards also writes their states merged, at completion; a
        # one-shard run's merged state is its shard's file, hard-linked (store.run._linked)
        whole = 0
        if mode == "profile" and len(shapes) > 1:
            from neurondb.profile.state import profile_file_bytes

            k, bins, d = _profile_shape(ext)
            whole = profile_file_bytes(ext.shape.widths, k, bins, max(2, len(data.label_names)),
                                       d)
        for d in dtypes:
            per = _job_bytes(ext, data, shapes, mode, d)
            out[d][0] += bytes_to_write(per, ()) + whole
            out[d][1] += bytes_to_write(per, done[j] if done is not None else ()) + whole
    return {d: (t, left) for d, (t, left) in out.items()}


def extraction_bytes(ext, lengths: Sequence[np.ndarray], done: Sequence[Iterable[int]] | None
                     = None, dtype: str | None = None) -> tuple[int, int]:
    """``(total, still_to_write)`` bytes of all runs of an ``_Extraction`` (``ext.jobs``,
    ``lengths`` per job); ``done[j]``: the complete chunks of job ``j`` (default: none);
    ``dtype``: as if stored in another dtype."""
    return extraction_sizes(ext, lengths, done, (dtype,))[dtype]
