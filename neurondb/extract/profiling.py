"""What the extraction loop calls for ``extract --profile`` (the seam to ``extract/run.py``).

The loop makes one :class:`RunProfiler` per run (``RunProfiler.for_run``; None unless the run
is in ``profile`` mode), one accumulator per shard (``accumulator(chunk)``), reduces every
batch around its forward pass (:func:`reducing`: inside the capture hooks on a CPU with the
kernel, else right after the forward from the rows the hooks copied) and hands the state to
the shard before its commit (``shard.profile = acc.state()``). :func:`check_request` and :func:`check_tokens`
refuse bad input before anything is written.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np

from neurondb.errors import ExtractError, StoreError, arg, given, switch
from neurondb.profile.edges import choose_edges
from neurondb.profile.keys import max_tokens
from neurondb.profile.reduce import ProfileAccumulator
from neurondb.runtime import memory
from neurondb.store.io import atomic_write_json

#: where a run records its histogram edges (written once, from chunk 0)
EDGES_FILE = "profile_edges.json"
WAIT_SECONDS = 600.0
DEFAULT_TOP_K = 20
DEFAULT_BINS = 256


def check_request(cfg) -> None:
    """Refuse what a profile run cannot do (an ``ExtractConfig``), before anything is read."""
    check_correlate_layers(cfg)
    check_also_capture(cfg)
    if not getattr(cfg, "profile", False):
        return
    if getattr(cfg, "dtype", None) and not getattr(cfg, "also_capture", None):
        raise ExtractError(f"{arg('dtype')} is the storage dtype of per-token tensors, and a "
                           f"{switch('profile')} run stores none (its sums are float64); drop "
                           f"{arg('dtype')}, or give {arg('also_capture')} for tensors beside it")
    if cfg.grad:
        raise ExtractError(f"{switch('profile')} reduces activations only; {switch('grad')} "
                           f"needs a per-token run (drop {switch('profile')})")
    if cfg.top_k < 1:
        raise ExtractError(f"{arg('top_k')} must be at least 1, not {cfg.top_k}")
    if cfg.profile_bins < 2:
        raise ExtractError(f"{arg('profile_bins')} must be at least 2, not "
                           f"{cfg.profile_bins}")


def check_also_capture(cfg) -> None:
    """``--also-capture`` only with ``--profile`` (the second run shares its forward pass)."""
    if getattr(cfg, "also_capture", None) and not getattr(cfg, "profile", False):
        raise ExtractError(f"{arg('also_capture')} stores per-token tensors beside a profile "
                           f"run; add {switch('profile')}, or capture them with "
                           f"{arg('positions')} alone")


def check_twin_positions(profile_positions: list[str], twin: list[str]) -> None:
    """The positions of the per-token run must be among the profile's captured tokens."""
    if "all" in profile_positions:
        return
    missing = [p for p in twin if p not in profile_positions]
    if missing:
        raise ExtractError(f"{given('also_capture', ','.join(missing))} is not among the "
                           f"profile's {given('positions', ','.join(profile_positions))}; add "
                           f"it there or drop {arg('positions')} (every token)")


def check_correlate_layers(cfg) -> None:
    """``--correlate-layers`` only with ``--profile``."""
    if getattr(cfg, "correlate_layers", None) and not getattr(cfg, "profile", False):
        raise ExtractError(f"{arg('correlate_layers')} accumulates within-model correlations "
                           f"in a profile run; add {switch('profile')}")


def profile_config(cfg) -> dict:
    """The parameters a resumed profile run must share (part of the run's config)."""
    out = {"top_k": int(cfg.top_k), "profile_bins": int(cfg.profile_bins)}
    if getattr(cfg, "correlate_layers", None):
        out["correlate_layers"] = [int(x) for x in cfg.correlate_layers]
    return out


def corr_layers(ext) -> tuple[str, tuple[int, ...]] | None:
    """``(input stack, layers)`` of ``--correlate-layers``, checked against the model."""
    layers = getattr(ext.cfg, "correlate_layers", None)
    if not layers:
        return None
    stack = ext.shape.stacks[0]
    n = ext.shape.n_layers(stack)
    bad = [la for la in layers if not 0 <= int(la) < n]
    if bad:
        raise ExtractError(f"{arg('correlate_layers')} {bad[0]} is out of range: stack "
                           f"{stack!r} has layers 0..{n - 1}")
    return stack, tuple(dict.fromkeys(int(x) for x in layers))


def n_positions(ext) -> int:
    """A bound on positions of an extraction: prompt + text tokens (+1: the decoder step)."""
    return int(ext.encoder.n_prompt + ext.max_length + 1)


def profile_rows(sels: dict, ids: np.ndarray, labels: np.ndarray) -> dict:
    """``{stack: (example_id, position, label)}`` of a batch's captured rows, from the loop's
    ``sels`` (``{stack: (b, t, slots)}``), example ids ``[B]`` and labels ``[B]``."""
    return {s: (ids[b], t, labels[b]) for s, (b, t, _slots) in sels.items()}


def streams(acc: ProfileAccumulator | None) -> bool:
    """Whether this batch's profile rows are reduced inside the capture hooks, from the
    model's own ``h`` (the CPU kernel, once the first batch chose the edges): the hooks then
    need not store the profile's rows, only those of a per-token twin, if any."""
    return acc is not None and acc.can_stream()


@contextlib.contextmanager
def reducing(acc: ProfileAccumulator | None, cap, rows: dict, where: dict | None = None):
    """Around one batch's forward pass: reduce its captured rows ``rows`` (``profile_rows``)
    into ``acc``. Where the accumulator can (:func:`streams`), each capture hook hands it the
    model's own ``h``, reduced there and then (nothing copied or held; a forward that fails
    half way leaves the accumulator refusing to give a state); otherwise the hooks copy the
    captured rows, as for a per-token run, and they are reduced once the forward is done.

    ``where``: ``{stack: (b, t)}`` (index arrays ``[n]``) of the profile's rows when the hooks
    store other rows (``cap.select``: a per-token twin's, in the same pass); only while
    :func:`streams`. None: the profile's rows are the ones the hooks capture."""
    if acc is None:
        yield
        return
    stream = acc.can_stream()
    assert stream or where is None, "the hooks must capture the profile's rows"
    if stream:
        acc.begin_batch(rows, where)
        cap.consume = acc.consume
    try:
        yield
    except BaseException:
        if stream:
            acc.abandon_batch()
        raise
    finally:
        cap.consume = None
    if stream:
        acc.end_batch(cap.acts if where is None else {})  # the twin's rows are not the profile's
    else:
        acc.update_batch(cap.acts, rows)


#: copies of a profile state the host holds at once: the accumulator's, the state handed to
#: the shard, and its file image (or, merging shards at the end, two states and an image)
HOST_COPIES = 3


def check_memory(ext, n_labels: int, d_corr: int = 0) -> str:
    """Refuse a profile whose state (``K`` x neurons for the top/bottom tokens, bins x
    neurons for the histograms, ``d_corr x d_corr`` correlation sums) cannot be held in
    memory: on the model's device once, on the host :data:`HOST_COPIES` times. Returns the
    line that says how much it takes."""
    from neurondb.profile.state import profile_file_bytes

    top_k, bins = int(ext.cfg.top_k), int(ext.cfg.profile_bins)
    state = profile_file_bytes(ext.shape.widths, top_k, bins, max(2, n_labels), d_corr)
    device = ext.lm.device
    needs = [("the host", HOST_COPIES * state, memory.available_memory("cpu"))]
    if getattr(device, "type", "cpu") != "cpu":
        needs.insert(0, (str(device), state, memory.available_memory(device)))
    for where, need, free in needs:
        if free is not None and need > free:
            levers = f"lower {given('profile_bins', bins)} or {given('top_k', top_k)}"
            if d_corr:
                levers += f", or give fewer {arg('correlate_layers')}"
            raise ExtractError(
                f"the profile's state takes {state / 1e9:,.2f} GB and {where} needs "
                f"{need / 1e9:,.2f} GB of it at once, more than its {free / 1e9:,.2f} GB of "
                f"free memory; {levers}")
    return (f"profile state: {state / 1e6:,.1f} MB ({top_k} top and bottom tokens and "
            f"{bins} bins per neuron) on {device}")


def check_tokens(ext, n_examples: int, rows: dict[str, int], n_labels: int = 0) -> list[str]:
    """Refuse a top-K larger than the tokens a stack captures (``rows``: per stack, over the
    whole run), more ``(example, position)`` slots than the keys tell apart, or a state larger
    than memory (:func:`check_memory`; ``n_labels``: the data's label count); returns lines
    to tell the user (the memory the state and within-model correlation sums take)."""
    top_k = int(ext.cfg.top_k)
    for stack, n in rows.items():
        if top_k > n:
            raise ExtractError(f"{given('top_k', top_k)} is larger than the {n} tokens the "
                               f"run captures in stack {stack!r}; give {given('top_k', n)} or "
                               "less")
    if n_examples * n_positions(ext) > max_tokens():
        raise ExtractError(f"{switch('profile')} tells tokens apart by example and position: "
                           f"{n_examples} examples x {n_positions(ext)} positions exceed "
                           f"2**32; lower {arg('max_examples')} or {arg('max_length')}")
    cl = corr_layers(ext)
    D = sum(ext.shape.d_ff(cl[0], la) for la in cl[1]) if cl else 0
    lines = [check_memory(ext, n_labels, D)]
    if cl is None:
        return lines
    return lines + [f"within-model correlation of {D} neurons ({cl[0]} layers "
            f"{', '.join(map(str, cl[1]))}): {8 * D * D / 1e6:,.1f} MB of float64 sums on the "
            f"device and in every shard's profile"]


class RunProfiler:
    """Profile accumulators for the shards of one run (see the module docstring)."""

    def __init__(self, ext, info, run_path: Path, rank: int, world_size: int):
        self.widths = dict(ext.shape.widths)
        self.top_k = int(ext.cfg.top_k)
        self.n_bins = int(ext.cfg.profile_bins)
        self.n_labels = len(info.labels)
        self.n_positions = n_positions(ext)
        self.device = ext.lm.device
        self.run_path = Path(run_path)
        self.config_hash = info.config_hash
        self.rank, self.world_size = int(rank), int(world_size)
        self.corr_layers = corr_layers(ext)

    @classmethod
    def for_run(cls, ext, info, run_path: Path) -> RunProfiler | None:
        if info.mode != "profile":
            return None
        return cls(ext, info, run_path, ext.dist.rank, ext.dist.world_size)

    def accumulator(self, chunk: int) -> ProfileAccumulator:
        """A fresh accumulator for the shard of ``chunk``."""
        return ProfileAccumulator(self.widths, self.top_k, self.n_bins, self.n_labels,
                                  self.n_positions, self.device,
                                  lambda acts: self.edges(chunk, acts), self.corr_layers)

    def edges(self, chunk: int, acts: dict) -> dict:
        """The run's histogram edges (:mod:`neurondb.profile.edges`): recorded ones, else
        chosen from this batch when it is the first batch of chunk 0, else (another rank)
        waited for."""
        got = read_edges(self.run_path, self.config_hash)
        if got is not None:
            return got
        if chunk == 0:
            edges = {key: choose_edges(float(x.min()), float(x.max()), self.n_bins)
                     for key, x in sorted(acts.items()) if x.numel()}
            write_edges(self.run_path, self.config_hash, edges)
            return edges
        if self.world_size > 1:
            return wait_for_edges(self.run_path, self.config_hash)
        raise StoreError(f"{self.run_path / 'profile_edges.json'} is missing although chunk 0 "
                         f"is written; re-extract the run with {switch('overwrite')}")


# -- the run's histogram edges, recorded once ----------------------------------------------
def edges_path(run_path: Path) -> Path:
    return Path(run_path) / EDGES_FILE


def write_edges(run_path: Path, config_hash: str, edges: dict[tuple[str, int], np.ndarray]) -> None:
    """Record the run's edges (``{(stack, layer): [n_bins + 1]}``) atomically."""
    atomic_write_json(edges_path(run_path), {
        "config_hash": config_hash,
        "edges": {f"{s}/{la}": [float(x) for x in e] for (s, la), e in edges.items()}})


def read_edges(run_path: Path, config_hash: str) -> dict[tuple[str, int], np.ndarray] | None:
    """The recorded edges, or None if not recorded (yet); a StoreError for another command's."""
    f = edges_path(run_path)
    if not f.exists():
        return None
    try:
        d = json.loads(f.read_text())
        out = {}
        for key, e in d["edges"].items():
            stack, layer = key.rsplit("/", 1)
            out[(stack, int(layer))] = np.asarray(e, dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{f} is damaged ({e}); re-extract the run with "
                         f"{switch('overwrite')}") from e
    if d.get("config_hash") != config_hash:
        raise StoreError(f"{f} was written by another command; re-extract the run with "
                         f"{switch('overwrite')}")
    return out


def wait_for_edges(run_path: Path, config_hash: str,
                   timeout: float = WAIT_SECONDS) -> dict[tuple[str, int], np.ndarray]:
    """The edges rank 0 records from chunk 0 (another rank waits for them)."""
    t0 = time.monotonic()
    while True:
        got = read_edges(run_path, config_hash)
        if got is not None:
            return got
        if time.monotonic() - t0 > timeout:
            raise StoreError(f"{edges_path(run_path)} did not appear within {timeout:.0f} s "
                             "(rank 0 writes it from the first batch of chunk 0); is rank 0 "
                             "running?")
        time.sleep(0.05)
