"""What the store's guarantees cost: open + first query of a 100-shard store, and extraction
time, for this tree against another checkout (e.g. the commit before the guarantees), measured
in one run with the two interleaved (ratios; this machine is noisy).

Each measurement is a fresh subprocess (``import neurondb`` + ``neurondb.open`` + one query,
or one whole ``neurondb extract``), alternating between the trees, so both see the same load.

    python bench/store_checks.py --before /tmp/nd-before [--shards 100] [--repeats 15]

``--before`` is a checkout of neurondb (its ``neurondb/`` package is imported from there);
each tree writes and reads its own store (same model, data and flags).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OPEN_SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
import neurondb
t1 = time.perf_counter()
s = neurondb.open(sys.argv[1])
t2 = time.perf_counter()
n = s.sql("SELECT count(*) FROM examples").fetchall()[0][0]
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "query": t3 - t2, "n": n,
                  "file": neurondb.__file__}))
"""

EXTRACT_ARGS = ["--data", "movie_reviews", "--split", "validation", "--positions", "prompt,mask",
                "--max-examples", "{n}", "--chunk-examples", "{chunk}", "--batch-size", "8",
                "--quiet", "--dtype", "float32"]


def run_in(tree: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          cwd=tree, check=True)


def extract(tree: Path, model: str, out: Path, n: int, chunk: int, prompt: str) -> float:
    if out.exists():
        shutil.rmtree(out)
    args = [a.format(n=n, chunk=chunk) for a in EXTRACT_ARGS]
    t0 = time.perf_counter()
    run_in(tree, ["-m", "neurondb.cli.app", "extract", model, "--out", str(out),
                  "--prompt", prompt, *args])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="checkout to compare against")
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--per-shard", type=int, default=4, help="examples per shard")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--extract-repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the model and stores here "
                    "(reused by a later run with --extract-repeats 0)")
    args = ap.parse_args()
    trees = {"before": args.before.resolve(), "after": ROOT}
    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="nd-bench-checks-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        sys.path.insert(0, str(ROOT))
        import torch

        from neurondb.testing import save_tiny

        model = str(tmp / "tiny-bert")
        if not (tmp / "tiny-bert").exists():
            save_tiny("bert", tmp / "tiny-bert", head="mlm")
        torch.manual_seed(0)
        prompt = tmp / "prompt.pt"
        torch.save(torch.randn(4, 32), prompt)
        n = args.shards * args.per_shard
        stores = {k: tmp / f"store-{k}" for k in trees}
        ext: dict[str, list[float]] = {k: [] for k in trees}
        for _ in range(args.extract_repeats):
            for k, tree in trees.items():
                ext[k].append(extract(tree, model, stores[k], n, args.per_shard, str(prompt)))
        times: dict[str, dict[str, list[float]]] = {k: {"import": [], "open": [], "query": []}
                                                    for k in trees}
        for _ in range(args.repeats):
            for k, tree in trees.items():
                out = json.loads(run_in(tree, ["-c", OPEN_SNIPPET, str(stores[k])]).stdout)
                assert out["n"] == n, out
                assert Path(out["file"]).resolve().is_relative_to(tree), out
                for part in ("import", "open", "query"):
                    times[k][part].append(out[part])
        shards = len(list((stores["after"] / "runs").glob("*/shards/c*")))
        print(f"store: tiny BERT (2 layers x 48), {n} examples of movie_reviews in {shards} "
              f"shards of {args.per_shard}, prompt+mask positions; load average "
              f"{os.getloadavg()[0]:.2f}")
        if args.extract_repeats:
            print(f"extraction (median of {args.extract_repeats}, interleaved): before "
                  f"{statistics.median(ext['before']):.2f} s, after "
                  f"{statistics.median(ext['after']):.2f} s, ratio "
                  f"{statistics.median(ext['after']) / statistics.median(ext['before']):.3f}")
        print(f"open + first query, median of {args.repeats} fresh processes (ms):")
        print(f"{'part':<8}{'before':>10}{'after':>10}{'after-before':>14}")
        for part in ("import", "open", "query"):
            b = statistics.median(times["before"][part]) * 1e3
            a = statistics.median(times["after"][part]) * 1e3
            print(f"{part:<8}{b:>10.1f}{a:>10.1f}{a - b:>14.1f}")
        b = statistics.median([o + q for o, q in zip(times["before"]["open"],
                                                     times["before"]["query"])]) * 1e3
        a = statistics.median([o + q for o, q in zip(times["after"]["open"],
                                                     times["after"]["query"])]) * 1e3
        print(f"{'open+query':<8}{b:>8.1f}{a:>10.1f}{a - b:>14.1f}")
        b = statistics.median([sum(p) for p in zip(*times["before"].values())]) * 1e3
        a = statistics.median([sum(p) for p in zip(*times["after"].values())]) * 1e3
        print(f"{'all three':<10}{b:>8.1f}{a:>10.1f}{a - b:>14.1f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
