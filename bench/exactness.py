"""What a compact storage dtype costs in predictivity: a ranking from 16-bit activations
against the same ranking from float32 activations of the same examples.

Two uses:

* offline demo (no arguments): a synthetic store of the shape of all-MiniLM-L6-v2 (6 layers x
  1,536 neurons) with 6 soft-prompt positions and ``mask`` over ``--examples`` evaluation
  examples, where ``--near`` of the neurons are nearly constant at the prompt positions (as
  real prompt-position neurons are: values within one float16 step of their mean, with a
  small label-dependent shift). The same values are stored as float32 and as float16
  (and bfloat16) and ranked against one float32 running-statistics baseline.
* your own store: extract a sample of the evaluation split twice, once with ``--dtype
  float32`` and once with the compact dtype (same ``--max-examples``, same prompt), and run

      python bench/exactness.py STORE --train TRAIN_RUN --exact EV32_RUN --compact EV16_RUN

Printed: neurons whose predictivity moved, the largest move, the top-1 % per-layer overlap
(``int(0.01 * d_ff)`` neurons per layer, at least 1), the neurons the exactness check flagged
(``near_base > 1``) and whether every neuron that moved by more than one example was flagged.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.query import predictivity
from neurondb.query.compare import top_k_indices
from neurondb.query.predictivity import ExactnessWarning
from neurondb.query.rankings import fraction_count, ranking_vectors


def demo_store(root: Path, examples: int, near: float, seed: int = 0) -> tuple[list[str], int]:
    """Write the demo store; returns the compact runs written and the evaluation examples."""
    from neurondb.testing_stores import make_store, write_periodic_run, write_stats_run

    widths = {"encoder": (1536,) * 6}
    make_store(root, widths)
    slots = [f"prompt:{i}" for i in range(6)] + ["mask"]
    rng = np.random.default_rng(seed)
    n_near = int(near * 1536)
    near_idx = {la: rng.choice(1536, n_near, replace=False) for la in range(6)}
    level = {la: rng.uniform(-0.17, 2.0, n_near) for la in range(6)}   # GELU output range

    def acts(n: int, s: int) -> tuple[np.ndarray, dict]:
        r = np.random.default_rng(s)
        y = r.permutation(np.arange(n) % 2)
        out = {}
        for la in range(6):
            x = r.standard_normal((n, len(slots), 1536)).astype(np.float32)
            ulp = np.abs(level[la]) * 2.0 ** -10 + 2.0 ** -24        # float16 step at the level
            sd = ulp * r.uniform(0.3, 4.0, n_near)
            shift = ulp * r.uniform(-1.0, 1.0, n_near)
            x[:, :, near_idx[la]] = (level[la] + sd * r.standard_normal((n, len(slots), n_near))
                                     + shift * (y[:, None, None] - 0.5))
            out[("encoder", la)] = x
        return y, out

    ytr, tr = acts(examples, seed + 1)
    write_stats_run(root, "tr", "train", ytr, slots, tr)
    yev, ev = acts(examples, seed + 2)
    compact = ["float16", "bfloat16"]
    for dt in ["float32", *compact]:
        write_periodic_run(root, f"ev_{dt}", f"validation_{dt}", yev, slots, ev, dtype=dt)
    return [f"ev_{dt}" for dt in compact], examples


def compare(store: Path | str, train: str, exact: str, compact: str, slots: str | None = None,
            top: float = 0.01) -> dict:
    """Rank ``exact`` and ``compact`` against ``train``; the figures of their difference."""
    t0 = time.perf_counter()
    a = predictivity(store, exact, train, slots=slots, write=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExactnessWarning)
        b = predictivity(store, compact, train, slots=slots, write=False)
    key = ["stack", "layer", "neuron"]
    m = a[key + ["score"]].merge(b[key + ["score", "near_base"]], on=key, suffixes=("_exact", "_compact"))
    move = (m["score_compact"] - m["score_exact"]).abs()
    n_ex = int(b.attrs.get("exactness", {}).get("max_near_base", 0))
    va, vb = ranking_vectors(a), ranking_vectors(b)
    overlaps = []
    for k in va:
        kk = max(1, fraction_count(top, va[k].size))
        overlaps.append(np.intersect1d(top_k_indices(va[k], kk), top_k_indices(vb[k], kk)).size / kk)
    from neurondb.store import open_store

    n_eval = open_store(store).run(exact).n_examples
    one = 1.0 / max(n_eval, 1) + 1e-12
    big = move > one
    flagged = m["near_base"] > 1
    return {
        "compact": compact, "neurons": int(len(m)), "moved": int((move > 1e-12).sum()),
        "moved_more_than_one_example": int(big.sum()), "max_move": float(move.max()),
        "top_overlap_mean": float(np.mean(overlaps)), "top_overlap_min": float(np.min(overlaps)),
        "flagged": int(flagged.sum()), "unflagged_big_moves": int((big & ~flagged).sum()),
        "warned": bool(caught), "max_near_base": n_ex, "eval_examples": int(n_eval),
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", nargs="?", help="Store (default: write the offline demo store).")
    ap.add_argument("--train", default="tr", help="Training run (baselines).")
    ap.add_argument("--exact", default=None, help="float32 evaluation run.")
    ap.add_argument("--compact", action="append", help="16-bit run(s) of the same examples.")
    ap.add_argument("--slots", default=None, help="Slots to use (glob patterns).")
    ap.add_argument("--examples", type=int, default=300, help="Demo: evaluation examples.")
    ap.add_argument("--near", type=float, default=0.1, help="Demo: share of near-constant neurons.")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.store is None:
            root = Path(tmp) / "demo"
            compact, n = demo_store(root, args.examples, args.near)
            exact = "ev_float32"
            print(f"demo store: 6 layers x 1536 neurons, 7 slots (6 prompt + mask), {n} examples, "
                  f"{args.near:.0%} near-constant neurons")
        else:
            root, exact, compact = Path(args.store), args.exact, args.compact or []
            if not exact or not compact:
                ap.error("give --exact RUN (float32) and --compact RUN (16-bit) of the same examples")
        rows = [compare(root, args.train, exact, c, args.slots) for c in compact]
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
