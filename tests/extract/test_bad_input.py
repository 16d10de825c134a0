"""Bad input: a one-line error naming the problem and the fix, and no partial store."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import neurondb
from neurondb.extract.errors import ExtractError
from neurondb.store.errors import NeurondbError

TEMPLATE = "{text} It was {mask}."


def _snapshot(path: Path) -> dict:
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*")} if path.exists() else {}


def _fails(out: Path, match: str, *args, **kwargs) -> str:
    before = _snapshot(out)
    with pytest.raises(NeurondbError, match=match) as e:
        neurondb.extract(*args, out=out, progress=False, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    assert _snapshot(out) == before, "a failed extraction changed the store"
    return msg


def test_unknown_model_family(tmp_path):
    from transformers import OPTConfig, OPTForCausalLM

    m = OPTForCausalLM(OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                                 num_attention_heads=2, vocab_size=50, word_embed_proj_dim=16))
    m.save_pretrained(tmp_path / "opt")
    msg = _fails(tmp_path / "s", "no neurondb adapter", str(tmp_path / "opt"), "x.csv")
    assert "bert" in msg and "llama" in msg


def test_missing_text_and_label_fields(tmp_path, tiny_path, sentiment_dir):
    m = str(tiny_path("bert"))
    _fails(tmp_path / "s", "no text field 'review'", m, str(sentiment_dir),
           text_fields=["review"], template=TEMPLATE, verbalizer=["bad", "good"])
    _fails(tmp_path / "s", "no label field 'stars'", m, str(sentiment_dir),
           label_field="stars", template=TEMPLATE, verbalizer=["bad", "good"])


def test_labels_not_covered_by_verbalizer(tmp_path, tiny_path):
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0, 1, 2]}), tmp_path / "d.parquet")
    _fails(tmp_path / "s", "covers 2 classes", str(tiny_path("bert")), str(tmp_path / "d.parquet"),
           template=TEMPLATE, verbalizer=["bad", "good"])


def test_empty_dataset(tmp_path, tiny_path):
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.int64())}),
                   tmp_path / "d.parquet")
    _fails(tmp_path / "s", "split of .*d.parquet has no examples; give data with examples",
           str(tiny_path("bert")), str(tmp_path / "d.parquet"), template=TEMPLATE,
           verbalizer=["bad", "good"])


def test_a_template_without_text_is_refused(tmp_path, tiny_path, sentiment_dir):
    """'It was {mask}.' made every example the same input, and was accepted."""
    _fails(tmp_path / "s", "has no text slot, so every example would be the same input",
           str(tiny_path("bert")), str(sentiment_dir), template="It was {mask}.",
           verbalizer=["bad", "good"])


@pytest.mark.parametrize("device,msg", [
    ("tpu", "device='tpu' is not a device; use auto, cpu, cuda or cuda:N"),
    ("cuda", "asks for a GPU, but torch"),
    ("cuda:7", "cuda:7"),
])
def test_a_device_this_torch_cannot_use_is_one_line(tmp_path, tiny_path, sentiment_dir, device,
                                                    msg):
    """A torch RuntimeError ('Expected one of cpu, cuda, ...') or AssertionError ('Torch not
    compiled with CUDA enabled') before; the GPU cases only where this torch sees none or fewer
    than eight."""
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the GPUs asked for")
    _fails(tmp_path / "s", msg, str(tiny_path("bert")), str(sentiment_dir),
           template=TEMPLATE, verbalizer=["bad", "good"], device=device)


@pytest.mark.parametrize("n", [0, -2])
def test_max_examples_below_one_is_refused_everywhere(tmp_path, tiny_path, sentiment_dir, n):
    """--max-examples 0 gave an 'empty split' error naming --max-examples as the cause, and a
    negative one a ValueError traceback in tune; both are one rule now, in every command."""
    from typer.testing import CliRunner

    from neurondb.cli.app import app

    m = str(tiny_path("bert"))
    _fails(tmp_path / "s", f"max_examples must be at least 1, not {n}", m, str(sentiment_dir),
           template=TEMPLATE, verbalizer=["bad", "good"], max_examples=n)
    runner = CliRunner()
    for args in (["extract", m, "--data", str(sentiment_dir), "--out", str(tmp_path / "s")],
                 ["tune", m, str(sentiment_dir), "--out", str(tmp_path / "p"), "--template",
                  TEMPLATE, "--verbalizer", "bad,good", "--epochs", "1"],
                 ["tune", m, str(sentiment_dir), "--out", str(tmp_path / "p"), "--template",
                  TEMPLATE, "--verbalizer", "bad,good", "--epochs", "1", "--eval-split",
                  "validation", "--max-eval-examples", str(n)]):
        flag = "--max-eval-examples" if "--max-eval-examples" in args else "--max-examples"
        extra = [] if flag == "--max-eval-examples" else ["--max-examples", str(n)]
        res = runner.invoke(app, args + extra)
        assert res.exit_code == 2, (args, res.output)
        assert f"{flag} must be at least 1, not {n}" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "s").exists() and not (tmp_path / "p").exists()


def test_template_without_mask_for_masked_lm(tmp_path, tiny_path, sentiment_dir):
    _fails(tmp_path / "s", "no \\{mask\\} slot", str(tiny_path("bert")), str(sentiment_dir),
           template="{text} It was", verbalizer=["bad", "good"])


def test_store_of_another_model(tmp_path, tiny_path, sentiment_dir):
    out = tmp_path / "s"
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, template=TEMPLATE,
                     verbalizer=["bad", "good"], progress=False).close()
    _fails(out, "holds a store of another model", str(tiny_path("bert", seed=1)),
           str(sentiment_dir), split="train", template=TEMPLATE, verbalizer=["bad", "good"])
    # the same model may add runs; the same run name needs --overwrite
    _fails(out, "already exists", str(tiny_path("bert")), str(sentiment_dir),
           template=TEMPLATE, verbalizer=["bad", "good"])


def test_insufficient_disk(tmp_path, tiny_path, sentiment_dir, monkeypatch):
    import neurondb.extract.run as run_mod

    monkeypatch.setattr(run_mod, "free_bytes", lambda path: 1000)
    msg = _fails(tmp_path / "s", "not enough disk", str(tiny_path("bert")), str(sentiment_dir),
                 template=TEMPLATE, verbalizer=["bad", "good"])
    assert "dtype='float16'" in msg
    assert not (tmp_path / "s").exists()
    # a profile run stores no tensors: its levers are the profile's size and the shard count
    msg = _fails(tmp_path / "s", "not enough disk", str(tiny_path("bert")), str(sentiment_dir),
                 readout="none", profile=True, top_k=2)
    assert "lower profile_bins or top_k, or raise chunk_examples" in msg and "dtype" not in msg
    assert not (tmp_path / "s").exists()


def test_out_dir_that_is_not_a_store(tmp_path, tiny_path, sentiment_dir):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    _fails(tmp_path / "s", "is not a neurondb store", str(tiny_path("bert")), str(sentiment_dir),
           template=TEMPLATE, verbalizer=["bad", "good"])


def test_grad_needs_a_readout(tmp_path, tiny_path, sentiment_dir):
    _fails(tmp_path / "s", "grad=True needs a readout", str(tiny_path("bert", head="base")),
           str(sentiment_dir), grad=True)


def test_bad_positions_and_dtype(tmp_path, tiny_path, sentiment_dir):
    with pytest.raises(ExtractError, match="positions takes a comma list"):
        neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), tmp_path / "s",
                         positions="middle", progress=False)
    with pytest.raises(ValueError, match="dtype must be one of"):
        neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), tmp_path / "s",
                         dtype="int8", progress=False)
    assert not (tmp_path / "s").exists()


def test_prompt_for_another_model(tmp_path, tiny_path, sentiment_dir):
    import torch

    from neurondb.runtime.prompt import SoftPrompt

    pdir = SoftPrompt(torch.zeros(3, 64)).save(tmp_path / "p")
    _fails(tmp_path / "s", "made for another model", str(tiny_path("bert")), str(sentiment_dir),
           prompt=str(pdir), template=TEMPLATE, verbalizer=["bad", "good"])


def test_stats_split_of_a_single_file(tmp_path, tiny_path, sentiment_dir):
    """One file has no splits: --stats-split would compute the baseline on the evaluated rows."""
    f = str(sentiment_dir / "validation.parquet")
    msg = _fails(tmp_path / "s", "is one file", str(tiny_path("bert")), f, split="validation",
                 stats_split="train", template=TEMPLATE, verbalizer=["bad", "good"])
    assert "stats_split 'train'" in msg and "one <split>" in msg


@pytest.mark.parametrize("max_length", [0, -4, 7])
def test_a_max_length_too_short_is_refused(tmp_path, tiny_path, sentiment_dir, max_length):
    """0 meant "no limit" (it was read as a missing value) while -4 was refused."""
    msg = _fails(tmp_path / "s", f"max_length={max_length} is too short", str(tiny_path("bert")),
                 str(sentiment_dir), readout="none", max_length=max_length)
    assert "give 8 or more" in msg
    assert not (tmp_path / "s").exists()

