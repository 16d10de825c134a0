"""A/B: a one-shard ``extract --profile`` (MiniLM, 256 SST-2 validation sentences) with the
shard's state linked as the run's ``profile.npz``, and with the link refused (the state merged
and saved), alternated; medians of ``--repeats`` after a warm-up round. Then the step alone on
the last run's shard state: merged and saved (with fsync) against linked.

    python bench/profile_link.py [--max-examples 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from neurondb.extract.run import ExtractConfig, _Extraction
from neurondb.profile.state import PROFILE_FILE, ProfileState
from neurondb.store import run as run_mod

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"


def _refuse(src, dst):
    raise OSError(1, "Operation not permitted")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-examples", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    real = os.link
    tmp = Path(tempfile.mkdtemp(prefix="nd-link-"))
    times: dict[str, list[float]] = {"link": [], "save": []}
    try:
        for i in range(args.repeats + 1):
            for mode in times:
                out = tmp / mode
                run_mod.os.link = real if mode == "link" else _refuse
                job = _Extraction(ExtractConfig(model="minilm", data=str(DATA), out=out,
                                                readout="none", profile=True, progress=False,
                                                max_examples=args.max_examples))
                t0 = time.perf_counter()
                job.run().close()
                if i:  # round 0 warms up
                    times[mode].append(time.perf_counter() - t0)
                if i < args.repeats:
                    shutil.rmtree(out)
        run_mod.os.link = real  # (os itself: the patch is global)
        step = _step(next((tmp / "save").glob(f"runs/*/shards/*/{PROFILE_FILE}")), tmp,
                     args.repeats)
    finally:
        run_mod.os.link = real
        shutil.rmtree(tmp, ignore_errors=True)
    for mode, ts in times.items():
        print(f"extract --profile, {mode}: median {statistics.median(ts):.3f} s  "
              f"{[round(x, 3) for x in ts]}")
    for mode, ts in step.items():
        print(f"the step alone, {mode}: median {statistics.median(ts) * 1e3:.1f} ms")


def _step(shard_state: Path, tmp: Path, repeats: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"save": [], "link": []}
    for _ in range(repeats):
        for mode in out:
            dst = tmp / f"step-{mode}.npz"
            t0 = time.perf_counter()
            if mode == "save":
                ProfileState.merged([shard_state]).save(dst)
            else:
                os.link(shard_state, dst)
            fd = os.open(dst, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            out[mode].append(time.perf_counter() - t0)
            dst.unlink()
    return out


if __name__ == "__main__":
    main()
