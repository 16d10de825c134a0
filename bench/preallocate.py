"""Would preallocating a tensor file make its writes cheaper? (issue 14, item 5)

Writes ``--mb`` MB in 128 KiB ``pwrite`` calls the way a capture's tensor file is written
(``fdatasync`` and ``POSIX_FADV_DONTNEED`` every 32 MB, ``fsync`` at the end), into a new file
as it is and into one first given its whole size with ``posix_fallocate`` (so ext4 skips the
delayed-allocation reservation of every page). Prints the writing thread's CPU time and the
wall time of each, medians of ``--repeats`` taken in turn; the ``fallocate`` call itself is
not counted (a lower bound of what it could save).

    python bench/preallocate.py [--mb 208] [--repeats 7] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

CHUNK = 128 << 10
SYNC = 32 << 20


def write_file(path: str, n_bytes: int, block: bytes, preallocate: bool) -> tuple[float, float]:
    """``(thread CPU s, wall s)`` of writing ``n_bytes`` to a new ``path``."""
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)
    try:
        if preallocate:
            os.posix_fallocate(fd, 0, n_bytes)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        off = synced = 0
        while off < n_bytes:
            os.pwrite(fd, block, off)
            off += len(block)
            if off - synced >= SYNC:
                os.fdatasync(fd)
                os.posix_fadvise(fd, synced, off - synced, os.POSIX_FADV_DONTNEED)
                synced = off
        os.fsync(fd)
        return time.thread_time() - cpu0, time.perf_counter() - wall0
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=208, help="MB written per file (208: a capture "
                    "of 256 SST-2 sentences)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dir", default=None, help="where the files go (default: a temporary "
                    "directory here, on the store's usual file system)")
    args = ap.parse_args()
    block = np.random.default_rng(0).random(CHUNK // 8).tobytes()
    n_bytes = args.mb << 20
    with tempfile.TemporaryDirectory(dir=args.dir or ".") as d:
        res: dict[str, list[tuple[float, float]]] = {"as it is": [], "posix_fallocate": []}
        for _ in range(args.repeats):
            for name in res:
                res[name].append(write_file(os.path.join(d, "t.h5"), n_bytes, block,
                                            name == "posix_fallocate"))
    print(f"{args.mb} MB in {CHUNK >> 10} KiB pwrites, fdatasync + DONTNEED every "
          f"{SYNC >> 20} MB, medians of {args.repeats}")
    print(f"{'file':<18}{'CPU s':>9}{'wall s':>9}")
    for name, v in res.items():
        print(f"{name:<18}{statistics.median(c for c, _ in v):>9.3f}"
              f"{statistics.median(w for _, w in v):>9.3f}")


if __name__ == "__main__":
    main()
