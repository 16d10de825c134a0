"""Where a prompt/mask capture's CPU goes, by thread, with Linux ``perf`` (issue 14, item 5).

Runs ``bench/extract.py``'s plain forward and its prompt/mask capture (MiniLM, SST-2
validation, batch 32, float32), each ``--repeats`` times after a warm-up, in a child process
under ``perf record -g``, and prints per capture (the difference from the plain passes) the CPU
seconds of torch's two busiest threads and of the others (the writer thread), split by
library, and the writer's top symbols including their callers (``pwrite``, ``fdatasync``,
...). Samples before the warm-up ended are left out. Needs ``perf`` with permission to
record a child process.

    python bench/perf_capture.py [--repeats 3] [--max-examples 256] [--freq 1999]
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(mode: str, repeats: int, max_examples: int, ready: Path) -> None:
    """The timed loop perf records: a warm-up, the ready time, then ``repeats`` passes."""
    sys.path.insert(0, str(HERE))
    import extract as bench  # bench/extract.py: the same model, data and timings

    from neurondb.extract.run import ExtractConfig, _Extraction

    tmp = Path(tempfile.mkdtemp(prefix="nd-perf-"))
    try:
        model = bench.pick_model(tmp)
        data, split = bench.pick_data()
        prompt = bench.make_prompt(model, 20, tmp)
        common = dict(max_examples=max_examples, batch_size=32, positions="prompt,mask")
        ref = _Extraction(ExtractConfig(model=model, data=data, out=tmp / "ref", split=split,
                                        template=bench.TEMPLATE, prompt=prompt, progress=False,
                                        **common))
        bench.plain_seconds(ref)
        ready.write_text(f"{time.clock_gettime(time.CLOCK_MONOTONIC):.6f}")
        for _ in range(repeats):
            if mode == "plain":
                dt = bench.plain_seconds(ref)
            else:
                dt, _ = bench.capture_seconds(model, data, split, prompt, tmp / "s", **common)
            print(f"{mode} {dt:.3f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def samples(data: Path, ready: float) -> list[tuple[int, list[tuple[str, str]]]]:
    """``(tid, [(symbol, library), ...] leaf first)`` of every sample after ``ready``."""
    text = subprocess.run(["perf", "script", "-i", str(data), "-F", "tid,time,ip,sym,dso"],
                          capture_output=True, text=True, check=True).stdout
    out, cur = [], None
    for line in text.splitlines() + [""]:
        if not line.strip():
            if cur is not None and cur[1] >= ready:
                out.append((cur[0], cur[2]))
            cur = None
            continue
        m = re.match(r"\s*(\d+)\s+([\d.]+):\s*$", line)
        if m:
            cur = (int(m[1]), float(m[2]), [])
            continue
        m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)$", line)
        if m and cur is not None:
            lib = re.sub(r"perf-\d+\.map", "JIT (perf map)", m[2].split("/")[-1])
            cur[2].append((m[1], lib))
    return out


def by_role(rows, hz: float, repeats: int) -> dict[tuple[str, str], float]:
    """CPU seconds per pass by (thread role, library): ``torch 1``/``torch 2`` (the two
    busiest threads), ``other`` (the writer and the rest)."""
    per_tid = collections.Counter(t for t, _ in rows)
    busiest = [t for t, _ in per_tid.most_common(2)]
    role = {t: f"torch {i + 1}" for i, t in enumerate(busiest)}
    out: collections.Counter = collections.Counter()
    for tid, frames in rows:
        if frames:
            out[(role.get(tid, "other"), frames[0][1])] += 1
    return {k: v / hz / repeats for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-examples", type=int, default=256)
    ap.add_argument("--freq", type=int, default=1999, help="perf sampling frequency (Hz)")
    ap.add_argument("--child", choices=["plain", "capture"], help=argparse.SUPPRESS)
    ap.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.repeats, args.max_examples, args.ready)
        return
    if shutil.which("perf") is None:
        sys.exit("perf is not installed (apt-get install linux-perf)")
    tmp = Path(tempfile.mkdtemp(prefix="nd-perf-"))
    try:
        cpu, writer_syms = {}, collections.Counter()
        for mode in ("plain", "capture"):
            data, ready = tmp / f"{mode}.data", tmp / f"{mode}.ready"
            subprocess.run(["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-F",
                            str(args.freq), "-g", "-o", str(data), sys.executable, __file__,
                            "--child", mode, "--ready", str(ready), "--repeats",
                            str(args.repeats), "--max-examples", str(args.max_examples)],
                           check=True)
            rows = samples(data, float(ready.read_text()))
            cpu[mode] = by_role(rows, args.freq, args.repeats)
            if mode == "capture":
                busiest = {t for t, _ in collections.Counter(t for t, _ in rows).most_common(2)}
                for tid, frames in rows:
                    if tid not in busiest:
                        for f in set(frames):
                            writer_syms[f] += 1
        keys = sorted(set(cpu["plain"]) | set(cpu["capture"]),
                      key=lambda k: -(cpu["capture"].get(k, 0) - cpu["plain"].get(k, 0)))
        print(f"CPU seconds per pass ({args.repeats} passes of {args.max_examples} sentences, "
              f"{args.freq} Hz): capture minus plain, by thread and library")
        for k in keys[:14]:
            d = cpu["capture"].get(k, 0) - cpu["plain"].get(k, 0)
            if abs(d) >= 0.005:
                print(f"  {k[0]:<8} {k[1]:<46} {d:+7.3f}")
        print("the writer thread (and any other), inclusive of callees, per capture:")
        for (sym, lib), n in writer_syms.most_common(40):
            if sym != "[unknown]" and n / args.freq / args.repeats >= 0.008:
                print(f"  {n / args.freq / args.repeats:7.3f}  {sym} ({lib})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
