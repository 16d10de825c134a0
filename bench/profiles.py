"""Cost of ``extract --profile`` on every token against a plain forward (issue 14, item 5).

MiniLM (the ``minilm`` alias) over SST-2 validation (``../shared/data/sst2``), batch 32,
every token captured. Three timings over the same length-sorted batches, measured in one run:

* ``plain``: ``model(**inputs)`` alone (inference mode);
* ``reduce``: the same forward with the capture hooks on every token and the profile
  accumulator updated on the device after each batch (what ``--profile`` adds to the loop);
* ``reduce`` with the torch reduction (``NEURONDB_PROFILE_KERNEL=torch``): what runs on
  a GPU, or on a CPU without a C compiler;
* ``extract``: the whole ``neurondb extract --profile`` command (tables written, shard
  committed), for reference.

Each of the first three is the best of ``--rounds`` rounds, taken in turn. Prints the
ratios ``reduce / plain`` (goal <= 1.15) and ``extract / plain``. On CUDA the
timings synchronise the device. ``--model``/``--data``/``--split`` take any model and data
(a smoke run: a tiny model from ``neurondb.testing.save_tiny`` and a few examples).

    python bench/profiles.py [--device cuda] [--examples 872] [--batch-size 32] [--top-k 20]
                             [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def batches(job) -> list:
    enc = job.encoder
    lengths = enc.lengths(job.data.texts)
    order = np.argsort(-lengths, kind="stable")
    bs = job.cfg.batch_size
    return [enc.encode(order[i:i + bs], [job.data.texts[j] for j in order[i:i + bs]])
            for i in range(0, len(order), bs)]


def time_plain(job, bs: list) -> float:
    from neurondb.runtime.forward import model_inputs

    lm = job.lm
    with torch.inference_mode():
        lm.model(**model_inputs(lm, bs[0], job.prompt))  # warm-up
        _sync(lm.device)
        t0 = time.perf_counter()
        for b in bs:
            lm.model(**model_inputs(lm, b, job.prompt))
        _sync(lm.device)
    return time.perf_counter() - t0


def time_reduce(job, bs: list) -> float:
    """Forward + hooks on every token + ``ProfileAccumulator.update_batch`` per batch."""
    from neurondb.extract.profiling import n_positions, profile_rows, reducing
    from neurondb.profile.edges import choose_edges
    from neurondb.profile.reduce import ProfileAccumulator
    from neurondb.runtime.forward import model_inputs
    from neurondb.runtime.hooks import FFNCapture

    lm, enc, cfg = job.lm, job.encoder, job.cfg
    dev = lm.device
    in_stack = job.shape.stacks[0]

    def edges(acts):
        return {k: choose_edges(float(x.min()), float(x.max()), cfg.profile_bins)
                for k, x in acts.items()}

    def one(cap, acc, b) -> None:
        sel = enc.select(b, job.positions)
        cap.clear()
        cap.select(in_stack, torch.as_tensor(sel.b, device=dev), torch.as_tensor(sel.t, device=dev))
        ids = b.example_ids
        rows = profile_rows({in_stack: (sel.b, sel.t, sel.slots)}, ids, job.data.labels[ids])
        with reducing(acc, cap, rows):  # what extract's loop does
            lm.model(**model_inputs(lm, b, job.prompt))

    with FFNCapture(lm.model, lm.adapter) as cap, torch.inference_mode():
        acc = ProfileAccumulator(job.shape.widths, cfg.top_k, cfg.profile_bins,
                                 len(job.data.label_names), n_positions(job), dev, edges)
        one(cap, acc, bs[0])  # warm-up (and the edges)
        _sync(dev)
        t0 = time.perf_counter()
        for b in bs:
            one(cap, acc, b)
        acc.state()  # the copy back to the host, once per shard
        _sync(dev)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared"
                                          / "data" / "sst2"))
    ap.add_argument("--split", default="validation")
    ap.add_argument("--examples", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    args = ap.parse_args()
    from neurondb.extract.run import ExtractConfig, _Extraction
    from neurondb.profile import native

    tmp = Path(tempfile.mkdtemp(prefix="nd-profile-"))
    try:
        cfg = ExtractConfig(model=args.model, data=args.data, out=tmp / "store", split=args.split,
                            readout="none", profile=True, top_k=args.top_k,
                            batch_size=args.batch_size, max_examples=args.examples,
                            device=args.device, progress=False)
        job = _Extraction(cfg)
        bs = batches(job)
        n_tok = int(sum(b.lengths.sum() for b in bs))
        # rounds alternate plain / kernel / torch and each takes its best round, so that a
        # burst of load on this shared machine does not land on one side only
        times: dict[str, list[float]] = {"plain": [], "reduce": [], "torch": []}
        for _ in range(args.rounds):
            times["plain"].append(time_plain(job, bs))
            times["reduce"].append(time_reduce(job, bs))
            os.environ[native.ENV_KERNEL] = "torch"
            times["torch"].append(time_reduce(job, bs))
            os.environ.pop(native.ENV_KERNEL)
        plain, reduce, reduce_torch = (min(times[k]) for k in ("plain", "reduce", "torch"))
        kernel = "CPU kernel" if native.available() and job.lm.device.type == "cpu" else "torch"
        _sync(job.lm.device)
        t0 = time.perf_counter()
        job.run().close()
        _sync(job.lm.device)
        full = time.perf_counter() - t0
        print(f"{args.model} on {Path(args.data).name}:{args.split}, {len(job.data)} examples, "
              f"{n_tok} tokens, batch {args.batch_size}, device {job.lm.device}, "
              f"top-k {args.top_k}, {cfg.profile_bins} bins, best of {args.rounds} rounds, "
              f"{torch.get_num_threads()} threads")
        print(f"plain forward     {plain:8.3f} s  {n_tok / plain:12,.0f} tok/s")
        print(f"forward + reduce  {reduce:8.3f} s  {n_tok / reduce:12,.0f} tok/s  "
              f"ratio {reduce / plain:.3f} (goal <= 1.15; {kernel})")
        print(f"  torch reduction {reduce_torch:8.3f} s  {n_tok / reduce_torch:12,.0f} tok/s  "
              f"ratio {reduce_torch / plain:.3f}")
        print(f"extract --profile {full:8.3f} s  {n_tok / full:12,.0f} tok/s  "
              f"ratio {full / plain:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
