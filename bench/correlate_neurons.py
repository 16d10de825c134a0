"""The correlate-neurons kernel against a plain NumPy/BLAS matmul of the same shape (issue 14,
item 5: goal >= 0.5 of the matmul's speed).

Synthetic activations ``x [rows, p]``, ``y [rows, q]`` (float32, as a store returns them;
MiniLM's layer width by default). Timed in one run:

* ``kernel``: :class:`neurondb.profile.pearson.PearsonAccumulator` over blocks of
  ``--block-rows`` rows (float64 shift, sums, sums of squares and ``x.T @ y``), then ``corr()``;
* ``matmul64``: one ``x.T @ y`` in float64 over all rows (the same multiply-adds, conversion
  included);
* ``matmul32``: one ``x.T @ y`` in float32, for reference.

Prints ``matmul64 / kernel`` (the fraction of BLAS speed the kernel reaches) and
``matmul32 / kernel``.

    python bench/correlate_neurons.py [--rows 32768] [--p 1536] [--q 1536] [--block-rows 4096]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from neurondb.profile.pearson import PearsonAccumulator


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=32768)
    ap.add_argument("--p", type=int, default=1536)
    ap.add_argument("--q", type=int, default=1536)
    ap.add_argument("--block-rows", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.p), dtype=np.float32)
    y = rng.standard_normal((args.rows, args.q), dtype=np.float32)

    def kernel() -> None:
        acc = PearsonAccumulator(args.p, args.q)
        for s in range(0, args.rows, args.block_rows):
            acc.update(x[s:s + args.block_rows], y[s:s + args.block_rows])
        acc.corr()

    def matmul64() -> None:
        _ = x.astype(np.float64).T @ y.astype(np.float64)

    def matmul32() -> None:
        _ = x.T @ y

    tk = best_of(kernel, args.repeat)
    t64 = best_of(matmul64, args.repeat)
    t32 = best_of(matmul32, args.repeat)
    gflop = 2 * args.rows * args.p * args.q / 1e9
    print(f"rows {args.rows}, p {args.p}, q {args.q}, blocks of {args.block_rows} "
          f"({gflop:.1f} GFLOP per pass; best of {args.repeat})")
    for name, t in (("kernel", tk), ("matmul64", t64), ("matmul32", t32)):
        print(f"{name:<9} {t:8.3f} s  {gflop / t:8.1f} GFLOP/s")
    print(f"kernel speed / float64 matmul: {t64 / tk:.3f} (goal >= 0.5); "
          f"/ float32 matmul: {t32 / tk:.3f}")


if __name__ == "__main__":
    main()
