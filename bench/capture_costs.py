"""Where a prompt/mask capture's time goes (issue 14, item 5): the capture of
``bench/extract.py`` (MiniLM, a random 20-token prompt, SST-2 validation, batch 32, float32)
timed as it is and with one of its costs switched off at a time, against a plain forward, all
in one run (medians of ``--repeats``, taken in turn):

* ``no hash``: the tensor file's block checksum not computed (a dummy digest, neither from
  the write buffers nor read back);
* ``no writeback``: no ``fdatasync`` while the file grows (the commit's fsync does it all),
  so its pages also stay in the page cache;
* ``keep cache``: written back while the file grows, but its pages left in the page cache
  (no ``POSIX_FADV_DONTNEED``: every write then needs fresh pages);
* ``no tensors``: nothing appended to the tensor file (tables, hooks, copies, commit only);
* ``writer idle`` / ``writer nice``: the same capture with the writer thread under
  ``SCHED_IDLE`` / at nice 19 (does its competition with torch's threads cost more than its
  work?). ``OMP_WAIT_POLICY=PASSIVE python bench/capture_costs.py ...`` asks the same of
  torch's spinning OpenMP threads (it must be set before torch starts).

The switches patch the store's internals, so this is a diagnosis, not a mode of the tool; the
store each variant writes is thrown away.

    python bench/capture_costs.py [--max-examples 256] [--repeats 3] [--variants capture,...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import extract as bench  # noqa: E402  (bench/extract.py: the same model, data and timings)

from neurondb.extract import writer  # noqa: E402
from neurondb.store import blockhash, tensors  # noqa: E402

VARIANTS = ("capture", "no hash", "no writeback", "keep cache", "no tensors", "writer idle",
            "writer nice")


def _switch(variant: str, real: dict) -> None:
    """Turn ``variant``'s cost off (and every other one back on)."""
    def dummy_hash(self, k: int) -> None:
        self.digests[k] = bytes(16)
        self.stale.discard(k)

    off = variant == "no hash"
    blockhash.WatchedFile._hash = dummy_hash if off else real["hash"]
    blockhash.WatchedFile._feed = (lambda self, *a: None) if off else real["feed"]
    blockhash.SYNC_BYTES = 1 << 62 if variant == "no writeback" else real["sync"]
    blockhash._drop_cached = (lambda fd: None) if variant == "keep cache" else real["drop"]
    tensors.TensorWriter.append = ((lambda self, *a: None) if variant == "no tensors"
                                   else real["append"])
    policy = {"writer idle": "idle", "writer nice": "nice"}.get(variant)

    def loop(self) -> None:  # the writer thread's policy, set from inside the thread
        if policy == "idle":
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        elif policy == "nice":
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        real["loop"](self)

    writer.BackgroundWriter._loop = loop if policy else real["loop"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-examples", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = ap.parse_args()
    from neurondb.extract.run import ExtractConfig, _Extraction

    real = {"hash": blockhash.WatchedFile._hash, "feed": blockhash.WatchedFile._feed,
            "sync": blockhash.SYNC_BYTES, "drop": blockhash._drop_cached,
            "append": tensors.TensorWriter.append, "loop": writer.BackgroundWriter._loop}
    tmp = Path(tempfile.mkdtemp(prefix="nd-costs-"))
    try:
        model = bench.pick_model(tmp)
        data, split = bench.pick_data()
        prompt = bench.make_prompt(model, 20, tmp)
        common = dict(max_examples=args.max_examples, batch_size=32, positions="prompt,mask")
        ref = _Extraction(ExtractConfig(model=model, data=data, out=tmp / "ref", split=split,
                                        template=bench.TEMPLATE, prompt=prompt, progress=False,
                                        **common))
        bench.plain_seconds(ref)  # warm-up
        variants = [v for v in args.variants.split(",") if v]
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
        times: dict[str, list[float]] = {"plain": []} | {v: [] for v in variants}
        for _ in range(args.repeats):
            times["plain"].append(bench.plain_seconds(ref))
            for v in variants:
                _switch(v, real)
                try:
                    dt, _ = bench.capture_seconds(model, data, split, prompt, tmp / "store",
                                                  **common)
                finally:
                    _switch("capture", real)
                times[v].append(dt)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"model {model}, {len(ref.data)} examples, prompt,mask float32, batch 32, "
              f"medians of {args.repeats}")
        print(f"{'variant':<16}{'seconds':>9}{'x plain':>9}{'saved s':>9}")
        for k, v in med.items():
            saved = (med["capture"] - v if k not in ("plain", "capture") and "capture" in med
                     else 0.0)
            print(f"{k:<16}{v:>9.3f}{v / med['plain']:>9.3f}{saved:>9.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
