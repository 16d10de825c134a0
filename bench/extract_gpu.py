"""GPU extraction throughput against a plain forward pass (issue: extraction at scale).

For a RoBERTa-base-shaped and a Llama-shaped random model (built from configs, so nothing
downloads), synthetic text of ~120 tokens, a 20-token soft prompt, batch sizes 32–256:
tokens/s of ``neurondb extract`` capturing prompt+mask positions and all positions, as a
fraction of a plain ``model(**inputs)`` loop over the same batches (goal >= 0.85 for
prompt/mask). Needs a CUDA device; prints a note and exits 0 without one.

    python bench/extract_gpu.py [--examples 2048] [--batch-sizes 32,64,128,256]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch


def build_models(tmp: Path) -> dict[str, Path]:
    import transformers as tf

    from neurondb.testing import WORDS, tiny_tokenizer

    out = {}
    tok_bert, tok_causal = tiny_tokenizer("bert"), tiny_tokenizer("causal")
    tok_bert.model_max_length = tok_causal.model_max_length = 512
    cfgs = {
        "roberta-base-shaped": (tf.RobertaConfig(vocab_size=50265, max_position_embeddings=514,
                                                 pad_token_id=0), tf.RobertaForMaskedLM, tok_bert),
        "llama-1b-shaped": (tf.LlamaConfig(hidden_size=2048, intermediate_size=5632,
                                           num_hidden_layers=16, num_attention_heads=32,
                                           num_key_value_heads=4, vocab_size=32000,
                                           pad_token_id=0, tie_word_embeddings=True),
                            tf.LlamaForCausalLM, tok_causal),
    }
    for name, (cfg, cls, tok) in cfgs.items():
        torch.manual_seed(0)
        m = cls(cfg)
        m.save_pretrained(tmp / name)
        tok.save_pretrained(tmp / name)
        out[name] = tmp / name
    del WORDS
    return out


def make_data(tmp: Path, n: int) -> Path:
    from neurondb.testing import WORDS

    rng = np.random.default_rng(0)
    words = [w for w in WORDS if w.isalpha()]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(90, 130)))) for _ in range(n)]
    path = tmp / "data.parquet"
    pq.write_table(pa.table({"text": texts, "label": rng.integers(0, 2, n)}), path)
    return path


def make_prompt(model_dir: Path, tmp: Path) -> str:
    from neurondb.runtime.model import load_config
    from neurondb.runtime.prompt import SoftPrompt

    d = load_config(str(model_dir)).hidden_size
    torch.manual_seed(0)
    return str(SoftPrompt(torch.randn(20, d) * 0.02).save(tmp / f"prompt-{model_dir.name}"))


def plain_tps(job) -> float:
    from neurondb.runtime.forward import model_inputs

    lm, enc = job.lm, job.encoder
    lengths = enc.lengths(job.data.texts)
    order = np.argsort(-lengths, kind="stable")
    bs = job.cfg.batch_size
    batches = [enc.encode(order[i:i + bs], [job.data.texts[j] for j in order[i:i + bs]])
               for i in range(0, len(order), bs)]
    tokens = int(lengths.sum()) + len(order) * enc.n_prompt
    with torch.inference_mode():
        lm.model(**model_inputs(lm, batches[0], job.prompt))  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for b in batches:
            lm.model(**model_inputs(lm, b, job.prompt))
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=2048)
    ap.add_argument("--batch-sizes", default="32,64,128,256")
    ap.add_argument("--model-dtype", default="bfloat16")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: bench/extract_gpu.py measures GPU throughput and needs one; "
              "nothing was measured")
        return
    from neurondb.extract.run import ExtractConfig, _Extraction

    tmp = Path(tempfile.mkdtemp(prefix="nd-gpu-"))
    try:
        models = build_models(tmp)
        data = make_data(tmp, args.examples)
        print(f"device {torch.cuda.get_device_name()}, {args.examples} examples (~110 tokens + "
              f"20 prompt tokens), model dtype {args.model_dtype}, storage float16")
        print(f"{'model':<22}{'batch':>6}{'positions':>14}{'plain tok/s':>14}{'extract tok/s':>15}"
              f"{'fraction':>10}")
        for name, path in models.items():
            prompt = make_prompt(path, tmp)
            readout = "mlm" if "roberta" in name else "causal"
            for bs in (int(x) for x in args.batch_sizes.split(",")):
                for positions in ("prompt,mask", "all"):
                    out = tmp / "store"
                    shutil.rmtree(out, ignore_errors=True)
                    cfg = ExtractConfig(model=str(path), data=str(data), out=out, split="x",
                                        template="{text} It was {mask}.",
                                        verbalizer=["bad", "good"], readout=readout,
                                        prompt=prompt, positions=positions, batch_size=bs,
                                        model_dtype=args.model_dtype, progress=False)
                    job = _Extraction(cfg)
                    base = plain_tps(job)
                    n_tok = int(job.encoder.lengths(job.data.texts).sum()) + len(job.data) * 20
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    job.run().close()
                    tps = n_tok / (time.perf_counter() - t0)
                    print(f"{name:<22}{bs:>6}{positions:>14}{base:>14,.0f}{tps:>15,.0f}"
                          f"{tps / base:>10.3f}", flush=True)
                    del job
                    torch.cuda.empty_cache()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
