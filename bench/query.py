"""Benchmark of the query layer's predictivity kernel and single-neuron reads.

A synthetic store of the shape of all-MiniLM-L6-v2 with 100 soft-prompt positions over SST-2
validation (6 layers x 1536 neurons x 872 examples x 100 slots, float16: 1.6 GB) is written
under ``--dir``, with SST-2's validation labels (from ``../shared/data`` when present) and a
planted skill neuron. Printed in one run:

1. predictivity throughput (the whole ``predictivity()`` call: layout, baselines, kernel,
   ranking, result file) as a fraction of a NumPy float32 ``sum`` over the same activations
   already in memory (per layer, best of 3);
2. the speed-up over a straightforward per-example loop in the style of the reference
   implementations (per example and layer: read its rows through the Store API, compare with
   the baselines, add ``(h > base) == label`` to a table); run on ``--loop-examples`` examples
   and extrapolated linearly to all examples when that is fewer than all;
3. peak RSS of ``predictivity()`` in a fresh process on the store and on a 2.5x larger one
   (``--big-gb``), which must not grow with the store;
4. a single-neuron top-examples query's time as a fraction of a full scan of the layer.

Results are appended to ``bench/RESULTS.md`` under ``## bench/query.py``. Stores are deleted
at the end unless ``--keep``.

    python bench/query.py [--dir /tmp/neurondb-bench] [--examples 872] [--big-gb 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from neurondb.query import predictivity, top_examples
from neurondb.query.predictivity import default_threads
from neurondb.store import open_store
from neurondb.testing_stores import make_store, write_periodic_run, write_stats_run

LAYERS, D_FF, SLOTS = 6, 1536, 100
SST2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2" / "validation.parquet"
PLANT = (3, 100, 7)  # layer, neuron, slot: +1.0 for label 1, -1.0 for label 0
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADING = "## bench/query.py"


def labels(n: int) -> tuple[np.ndarray, str]:
    if SST2.exists():
        import pyarrow.parquet as pq

        y = pq.read_table(SST2).column("label").to_numpy()
        if n <= y.size:
            return y[:n].astype(np.int64), f"SST-2 validation labels ({SST2.name})"
        return np.resize(y, n).astype(np.int64), "SST-2 validation labels, repeated"
    rng = np.random.default_rng(0)
    return rng.integers(0, 2, n), "random labels (SST-2 file not found)"


def block_fn(y: np.ndarray, seed: int):
    """Activations as float16 bits: random sign, |x| log-uniform in [2^-24, 2); the planted
    neuron is +-1 by label. Generated per block (layer-seeded), never all in memory."""
    def make(stack: str, layer: int, e0: int, e1: int) -> np.ndarray:
        rng = np.random.default_rng((seed, layer, e0))
        bits = rng.integers(0, 1 << 16, size=(e1 - e0, SLOTS, D_FF), dtype=np.uint16) & 0xBFFF
        x = bits.view(np.float16)
        if layer == PLANT[0]:
            x[:, PLANT[2], PLANT[1]] = np.where(y[e0:e1] == 1, 1.0, -1.0)
        return x
    return make


def build(root: Path, n_examples: int, with_train: bool = True) -> dict:
    t0 = time.perf_counter()
    make_store(root, {"encoder": (D_FF,) * LAYERS}, family="bert", d_model=384)
    slots = [f"prompt:{i}" for i in range(SLOTS)]
    y, source = labels(n_examples)
    write_periodic_run(root, "ev", "validation", y, slots, block_fn(y, 1), dtype="float16",
                       label_names=["negative", "positive"], dataset="sst2-synthetic",
                       block_examples=16)
    if with_train:
        n_tr = 64
        ytr = np.r_[np.zeros(n_tr // 2, int), np.ones(n_tr // 2, int)]
        fn = block_fn(ytr, 2)
        acts = {("encoder", la): fn("encoder", la, 0, n_tr).astype(np.float32) for la in range(LAYERS)}
        write_stats_run(root, "tr", "train", ytr, slots, acts, label_names=["negative", "positive"])
    size = sum(f.stat().st_size for f in (root / "runs" / "ev").rglob("activations.h5"))
    return {"seconds": time.perf_counter() - t0, "bytes": size, "labels": source, "n": n_examples}


def numpy_sum_seconds(st) -> float:
    """Best-of-3 ``np.sum`` of each layer's float32 activations held in memory, summed."""
    total = 0.0
    for layer in range(LAYERS):
        total += _best_of(st.activations(layer, run="ev").sum, 3, warm=True)
    return total


def _best_of(fn, n: int, warm: bool = False) -> float:
    if warm:
        fn()
    return min(_timed(fn) for _ in range(n))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def reference_loop(st, n: int) -> tuple[float, np.ndarray]:
    """Per example and layer: read the example's rows, compare with the baselines, count
    agreements with the label (as the reference implementations' probe loop does)."""
    stats = st.stats(run="tr")
    base = [stats.mean("encoder", la) for la in range(LAYERS)]   # [100, 1536] in slot order
    ex = st.examples(run="ev").to_pandas().sort_values("example_id")
    y = ex["label"].to_numpy()
    acc = np.zeros((LAYERS, SLOTS, D_FF))
    t0 = time.perf_counter()
    for e in range(n):
        for la in range(LAYERS):
            h = st.activations(la, run="ev", rows=slice(e * SLOTS, (e + 1) * SLOTS))
            pred = h > base[la]
            acc[la] += pred == (y[e] == 1)
    return time.perf_counter() - t0, acc


def child_rss(path: Path, threads: int) -> dict:
    """Peak RSS (VmHWM: this process's own high-water mark, which exec resets, unlike
    ``ru_maxrss`` that inherits the parent's at fork) of a fresh process after importing
    neurondb and opening the store, and after ``predictivity()`` on it."""
    code = (
        "import json, time\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1]) / 1024\n"
        "from neurondb.query import predictivity\n"
        "from neurondb.store import open_store\n"
        f"st = open_store({str(path)!r})\n"
        "before = hwm()\n"
        "t0 = time.perf_counter()\n"
        f"predictivity(st, 'ev', 'tr', write=False, threads={threads})\n"
        "dt = time.perf_counter() - t0\n"
        "print(json.dumps({'before_mb': before, 'peak_mb': hwm(), 'seconds': dt}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def full_scan_top(st, layer: int, neuron: int, k: int = 10) -> tuple[float, np.ndarray]:
    """The same top-examples query by a full scan of the layer (every neuron decoded)."""
    t0 = time.perf_counter()
    col = np.concatenate([x[:, neuron] for _, x in st.iter_activations(layer, run="ev")])
    best = col.reshape(-1, SLOTS).max(1)
    top = np.argsort(-best, kind="stable")[:k]
    return time.perf_counter() - t0, top


def wait_for_idle(max_wait: float, threshold: float = 0.7) -> float:
    """Sleep until the 1-minute load average has been below ``threshold`` for three checks in a
    row, 10 s apart (at most ``max_wait`` s)."""
    t0, calm = time.time(), 0
    while calm < 3 and time.time() - t0 < max_wait:
        calm = calm + 1 if os.getloadavg()[0] < threshold else 0
        time.sleep(10)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/neurondb-bench-query"))
    ap.add_argument("--examples", type=int, default=872, help="examples of the main store (872: 1.6 GB)")
    ap.add_argument("--big-gb", type=float, default=4.0, help="size of the second store for the RSS check")
    ap.add_argument("--loop-examples", type=int, default=872,
                    help="examples the reference loop runs on (extrapolated if fewer than all)")
    ap.add_argument("--threads", type=int, default=None, help="kernel threads (default: cores, at most 4)")
    ap.add_argument("--keep", action="store_true", help="keep the stores")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="before measuring, wait up to S seconds for the load average to drop below 0.7")
    ap.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    threads = args.threads or default_threads()
    if args.dir.exists():
        shutil.rmtree(args.dir)
    main_dir, big_dir = args.dir / "minilm-sst2", args.dir / "big"
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    started = time.time()
    info = build(main_dir, args.examples)
    n_vals = LAYERS * args.examples * SLOTS * D_FF
    say(f"store: {main_dir.name}: {LAYERS} layers x {D_FF} neurons x {args.examples} examples x "
        f"{SLOTS} slots, float16, {info['bytes'] / 1e9:.2f} GB activations ({info['labels']}); "
        f"written in {info['seconds']:.0f} s")
    st = open_store(main_dir)
    waited = wait_for_idle(args.wait_idle) if args.wait_idle > 0 else 0.0
    load0 = os.getloadavg()[0]
    say(f"load average before measuring: {load0:.2f} (waited {waited:.0f} s for idle)")

    # 1. predictivity vs numpy sum
    t_sum = numpy_sum_seconds(st)
    times = {}
    for th in sorted({1, threads}):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            df = predictivity(st, "ev", "tr", name="bench", overwrite=True, threads=th)
            best = min(best, time.perf_counter() - t0)
        times[th] = best
    t_pred = times[threads]
    top = df[(df["layer"] == PLANT[0]) & (df["rank"] == 1)].iloc[0]
    assert (int(top["neuron"]), top["slot"], top["score"]) == (PLANT[1], f"prompt:{PLANT[2]}", 1.0), top
    say(f"numpy float32 sum over the same activations in memory: {t_sum:.3f} s "
        f"({n_vals / t_sum / 1e9:.2f} G values/s)")
    for th, t in times.items():
        say(f"predictivity, {th} thread(s): {t:.3f} s ({n_vals / t / 1e9:.2f} G values/s, "
            f"{info['bytes'] / t / 1e9:.2f} GB/s of float16) = {t_sum / t:.2f} x the numpy sum "
            "throughput")
    say(f"planted neuron found: layer {PLANT[0]} neuron {int(top['neuron'])} rank 1, "
        f"predictivity {top['score']:.3f} at {top['slot']}")

    # 2. reference loop
    n_loop = min(args.loop_examples, args.examples)
    t_loop, acc = reference_loop(st, n_loop)
    t_loop_all = t_loop * args.examples / n_loop
    how = "measured on all examples" if n_loop == args.examples else \
        f"measured on {n_loop} examples, extrapolated x{args.examples / n_loop:.1f}"
    if n_loop == args.examples:
        acc = acc / args.examples
        pred = np.maximum(acc, 1 - acc).max(1)   # [layers, d]
        got = np.stack([df[df["layer"] == la].sort_values("neuron")["score"].to_numpy()
                        for la in range(LAYERS)])
        assert np.array_equal(pred, got), "reference loop and kernel disagree"
        how += "; its predictivities equal the kernel's exactly"
    say(f"per-example reference loop: {t_loop_all:.2f} s ({how}) -> kernel speed-up "
        f"{t_loop_all / t_pred:.1f}x")

    # 4. single-neuron query vs full scan (before the big store evicts this one from the cache)
    layer, neuron = PLANT[0], PLANT[1]
    top_examples(st, "ev", layer, neuron, k=10)
    t_one = min(_timed(lambda: top_examples(st, "ev", layer, neuron, k=10)) for _ in range(3))
    q = top_examples(st, "ev", layer, neuron, k=10)
    t_scan, idx = full_scan_top(st, layer, neuron)
    assert list(q["example_id"] - 1000) == list(idx)
    say(f"top examples of one neuron: {t_one * 1e3:.1f} ms; the same by a full scan of the layer "
        f"(Store.iter_activations): {t_scan * 1e3:.0f} ms -> fraction {t_one / t_scan:.3f}")
    st.close()

    # 3. peak RSS, main store vs a bigger one, each in a fresh process
    rss_main = child_rss(main_dir, threads)
    big_n = int(round(args.big_gb * 1e9 / (LAYERS * SLOTS * D_FF * 2)))
    big = build(big_dir, big_n)
    rss_big = child_rss(big_dir, threads)
    for inf, r in ((info, rss_main), (big, rss_big)):
        say(f"peak RSS, {inf['bytes'] / 1e9:.2f} GB store: {r['peak_mb']:.0f} MB "
            f"(after import and open: {r['before_mb']:.0f} MB; predictivity {r['seconds']:.2f} s)")
    say(f"peak RSS growth from {info['bytes'] / 1e9:.1f} GB to {big['bytes'] / 1e9:.1f} GB: "
        f"{rss_big['peak_mb'] - rss_main['peak_mb']:+.0f} MB")
    if not args.keep:
        shutil.rmtree(args.dir)

    if not args.no_results:
        cmd = "python bench/query.py " + " ".join(sys.argv[1:])
        env = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"numpy {np.__version__}, Python {platform.python_version()}, "
               f"load average at end {os.getloadavg()[0]:.2f}; store files in the page cache (warm)")
        section = [HEADING, "", f"Command: `{cmd.strip()}` (run {time.strftime('%Y-%m-%d')}, "
                   f"{time.time() - started:.0f} s). {env}.", "", "```", *lines, "```", ""]
        write_section(section)


def write_section(section: list[str]) -> None:
    """Replace this script's section of bench/RESULTS.md (or append it), leaving others."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    block = "\n".join(section)
    pat = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pat.sub(block + "\n", text) if pat.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
