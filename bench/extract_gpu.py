"""GPU extraction throughput against a plain forward pass (issue 14, item 6).

For a RoBERTa-base-shaped and a Llama-shaped random model (built from configs on the device,
so nothing downloads or touches the disk), synthetic text of ~110 words, a 20-token soft
prompt: tokens/s of a whole extraction (tables, tensor files, commit) as a fraction of a plain
``model(**inputs)`` loop over the same length-sorted batches, measured in one run. Modes:

* ``prompt-mask``: per-token tensors of the prompt and mask positions (float16 storage);
* ``profile``: ``--profile`` over every token (top-K, histograms, moments; no tensors);
* ``all``: per-token tensors of every position (float16), writing ~73 KB (RoBERTa-base) to
  ~180 KB (Llama-1B-shaped) per token: bound by the disk, not a goal; off by default.

Goal: >= 0.9 of the plain forward's tokens/s for ``prompt-mask`` and ``profile``.
``--device cpu --tiny`` runs the same code on tiny models (a smoke test, not a measurement);
without ``--tiny`` it needs a CUDA device, and prints a note and exits 0 without one.

    python bench/extract_gpu.py [--examples 2048] [--batch-sizes 64,256]
                                [--modes prompt-mask,profile] [--models roberta-base-shaped,...]
                                [--model-dtype bfloat16] [--device cuda] [--tiny]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profiles import _sync, batches, time_plain  # noqa: E402  (the same plain forward)

MODES = {  # mode -> ExtractConfig keywords
    "prompt-mask": dict(positions="prompt,mask", dtype="float16"),
    "profile": dict(positions="all", profile=True, readout="none"),
    "all": dict(positions="all", dtype="float16"),
}
MODELS = ("roberta-base-shaped", "llama-1b-shaped")
GOAL = 0.9


def model_config(name: str, tiny: bool):
    """``(config, model class, tokenizer)`` of a named shape; ``tiny``: the same families at
    a few thousand parameters."""
    import transformers as tf

    from neurondb.testing import VOCAB_SIZE, tiny_tokenizer

    if name == "roberta-base-shaped":
        tok = tiny_tokenizer("bert")
        size = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2) if tiny else {}
        cfg = tf.RobertaConfig(vocab_size=VOCAB_SIZE if tiny else 50265,
                               max_position_embeddings=514, pad_token_id=0, **size)
        cls = tf.RobertaForMaskedLM
    elif name == "llama-1b-shaped":
        tok = tiny_tokenizer("causal")
        size = (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2) if tiny else
                dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=4))
        cfg = tf.LlamaConfig(vocab_size=VOCAB_SIZE if tiny else 32000, pad_token_id=0,
                             tie_word_embeddings=True, **size)
        cls = tf.LlamaForCausalLM
    else:
        raise SystemExit(f"unknown model {name!r}; models: {', '.join(MODELS)}")
    tok.model_max_length = 512
    return cfg, cls, tok


def build_model(name: str, tiny: bool, device: str, dtype: str):
    """A random model of shape ``name`` made on ``device`` in ``dtype``, and its tokenizer."""
    cfg, cls, tok = model_config(name, tiny)
    torch.manual_seed(0)
    with torch.device(device):
        model = cls(cfg).to(getattr(torch, dtype)).eval()
    return model, tok


def make_data(tmp: Path, n: int, words_per_example: tuple[int, int]) -> Path:
    from neurondb.testing import WORDS

    rng = np.random.default_rng(0)
    words = [w for w in WORDS if w.isalpha()]
    lo, hi = words_per_example
    texts = [" ".join(rng.choice(words, size=int(rng.integers(lo, hi)))) for _ in range(n)]
    path = tmp / "data.parquet"
    pq.write_table(pa.table({"text": texts, "label": rng.integers(0, 2, n)}), path)
    return path


def make_prompt(hidden: int, tmp: Path, name: str) -> str:
    from neurondb.runtime.prompt import SoftPrompt

    torch.manual_seed(0)
    return str(SoftPrompt(torch.randn(20, hidden) * 0.02).save(tmp / f"prompt-{name}"))


def measure(model, tok, name: str, data: Path, prompt: str, mode: str, bs: int,
            out: Path) -> tuple[float, float, float]:
    """``(plain tok/s, extract tok/s, store MB)`` of one mode and batch size."""
    from neurondb.extract.run import ExtractConfig, _Extraction
    from neurondb.store.reader import open_store

    shutil.rmtree(out, ignore_errors=True)
    kw = dict(MODES[mode])
    readout = kw.pop("readout", "mlm" if "roberta" in name else "causal")
    cfg = ExtractConfig(model=model, tokenizer=tok, data=str(data), out=out, split="x",
                        template="{text} It was {mask}.", verbalizer=["bad", "good"],
                        readout=readout, prompt=prompt, batch_size=bs, progress=False, **kw)
    job = _Extraction(cfg)
    bs_list = batches(job)
    plain, n_tok = time_plain(job, bs_list), int(sum(int(b.lengths.sum()) for b in bs_list))
    _sync(job.lm.device)
    t0 = time.perf_counter()
    job.run().close()
    _sync(job.lm.device)
    seconds = time.perf_counter() - t0
    with open_store(out) as s:  # the run is there, with every example
        n = s.examples().num_rows
    if n != len(job.data):
        raise SystemExit(f"{name} {mode}: the store holds {n} of {len(job.data)} examples")
    mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    shutil.rmtree(out, ignore_errors=True)
    return n_tok / plain, n_tok / seconds, mb


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=2048)
    ap.add_argument("--batch-sizes", default="64,256")
    ap.add_argument("--modes", default="prompt-mask,profile", help=f"of {', '.join(MODES)}")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--model-dtype", default="bfloat16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny models (a smoke test)")
    ap.add_argument("--workdir", default=None, help="where the stores go (default: a temp dir)")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    models = [m for m in args.models.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}; modes: {', '.join(MODES)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: bench/extract_gpu.py measures GPU throughput and needs one; "
              "nothing was measured")
        return
    if device.type != "cuda" and not args.tiny:
        ap.error("without CUDA only --tiny runs (a smoke test of this script)")
    tmp = Path(tempfile.mkdtemp(prefix="nd-gpu-", dir=args.workdir))
    try:
        data = make_data(tmp, args.examples, (8, 16) if args.tiny else (90, 130))
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"device {where}, {args.examples} examples (~{'12' if args.tiny else '110'} words"
              f" + 20 prompt tokens), model dtype {args.model_dtype}, torch {torch.__version__}"
              f"{', tiny models (smoke test)' if args.tiny else ''}", flush=True)
        print(f"{'model':<22}{'batch':>6}{'mode':>13}{'plain tok/s':>14}{'extract tok/s':>15}"
              f"{'fraction':>10}{'store MB':>10}", flush=True)
        for name in models:
            model, tok = build_model(name, args.tiny, args.device, args.model_dtype)
            prompt = make_prompt(model.config.hidden_size, tmp, name)
            for bs in (int(x) for x in args.batch_sizes.split(",")):
                for mode in modes:
                    base, tps, mb = measure(model, tok, name, data, prompt, mode, bs,
                                            tmp / "store")
                    flag = "" if mode == "all" else ("  ok" if tps / base >= GOAL else
                                                     f"  below {GOAL}")
                    print(f"{name:<22}{bs:>6}{mode:>13}{base:>14,.0f}{tps:>15,.0f}"
                          f"{tps / base:>10.3f}{mb:>10.1f}{flag}", flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
