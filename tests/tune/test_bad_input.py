"""Bad input to tune/evaluate/transfer: one line naming the problem, nothing half-written."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from neurondb.cli.app import app
from neurondb.extract.errors import ExtractError
from neurondb.runtime.data import load_data
from neurondb.runtime.evaluate import evaluate
from neurondb.runtime.model import load_model
from neurondb.runtime.prompt import load_prompt
from neurondb.testing import save_tiny
from neurondb.tune.train import tune_prompt
from neurondb.tune.transfer import transfer

TEMPLATE = "{text} It was {mask}."
VERB = ["terrible", "great"]

runner = CliRunner()


def _data(d, labels):
    d.mkdir()
    texts = ["the movie was great", "a boring film", "the best film", "sad and terrible"]
    rows = {"sentence": [texts[i % 4] for i in range(len(labels))], "label": labels}
    for split in ("train", "validation"):
        pq.write_table(pa.table(rows), d / f"{split}.parquet")
    return d


def _tune(model, data, out, **kw):
    base = dict(prompt_tokens=2, seeds=(1,), epochs=1, template=TEMPLATE, verbalizer=VERB,
                progress=False)
    base.update(kw)
    return tune_prompt(str(model), str(data), out, **base)


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_path, sentiment_dir):
    return _tune(tiny_path("bert"), sentiment_dir, tmp_path_factory.mktemp("t") / "p")[0]


def test_one_class(tmp_path, tiny_path):
    data = _data(tmp_path / "d", [1, 1, 1, 1])
    with pytest.raises(ExtractError, match="single class") as e:
        _tune(tiny_path("bert"), data, tmp_path / "o")
    _one_line(e)
    assert not (tmp_path / "o").exists()


def test_labels_the_verbalizer_does_not_cover(tmp_path, tiny_path):
    data = _data(tmp_path / "d", [0, 1, 2, 1])
    with pytest.raises(ExtractError, match="covers 2 classes") as e:
        _tune(tiny_path("bert"), data, tmp_path / "o")
    assert "give one verbalizer word per label" in _one_line(e)


def test_prompt_made_for_another_model(tuned, tmp_path, tiny_path, sentiment_dir):
    # same architecture and width, other weights: the fingerprint tells them apart
    other = load_model(str(tiny_path("bert", seed=1)), "mlm", "cpu")
    val = load_data(str(sentiment_dir), "validation")
    with pytest.raises(ExtractError, match="another model") as e:
        evaluate(other, load_prompt(tuned), val)
    _one_line(e)
    with pytest.raises(ExtractError, match="another model"):
        transfer([tuned], [(str(sentiment_dir), "validation")], str(tiny_path("bert", seed=1)),
                 progress=False)
    # another width
    wide = save_tiny("bert", tmp_path / "wide", hidden_size=64)
    with pytest.raises(ExtractError, match="width 32") as e:
        evaluate(load_model(str(wide), "mlm", "cpu"), load_prompt(tuned), val)
    _one_line(e)


def test_existing_seed_directory_needs_overwrite(tuned, tiny_path, sentiment_dir):
    out = tuned.parent
    before = (tuned / "prompt.safetensors").read_bytes()
    with pytest.raises(ExtractError, match="already exists.*overwrite=True") as e:
        _tune(tiny_path("bert"), sentiment_dir, out)
    _one_line(e)
    assert (tuned / "prompt.safetensors").read_bytes() == before
    res = runner.invoke(app, ["tune", str(tiny_path("bert")), str(sentiment_dir), "--out",
                              str(out), "--seeds", "1", "--prompt-tokens", "2", "--epochs", "1",
                              "--template", TEMPLATE, "--verbalizer", ",".join(VERB), "-q"])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "already exists" in res.output
    # --overwrite replaces it (seed 1 again, other lr: other bytes)
    _tune(tiny_path("bert"), sentiment_dir, out, overwrite=True, lr=0.5)
    assert (tuned / "prompt.safetensors").read_bytes() != before


@pytest.mark.parametrize("kw,match", [
    (dict(prompt_tokens=0), "prompt_tokens must be at least 1"),
    (dict(seeds=(1, 1)), "repeats a seed"),
    (dict(init="zeros"), "init must be one of"),
    (dict(verbalizer=["great"]), "at least two label words"),
    (dict(template="{text}"), r"no \{mask\} slot"),
])
def test_bad_options(kw, match, tmp_path, tiny_path, sentiment_dir):
    with pytest.raises(ExtractError, match=match) as e:
        _tune(tiny_path("bert"), sentiment_dir, tmp_path / "o", **kw)
    _one_line(e)


def test_head_needs_a_mask_to_pool_at(tmp_path, tiny_path, sentiment_dir):
    with pytest.raises(ExtractError, match="pool='first' or 'mean'") as e:
        _tune(tiny_path("bert", head="base"), sentiment_dir, tmp_path / "o", template="{text}",
              verbalizer=None)
    _one_line(e)


def test_eval_split_of_a_single_file(tmp_path, tiny_path, sentiment_dir):
    """Early stopping on a single file would score the training rows themselves."""
    with pytest.raises(ExtractError, match="eval_split 'validation' would read the same") as e:
        _tune(tiny_path("bert"), sentiment_dir / "train.parquet", tmp_path / "o")
    _one_line(e)
    assert not (tmp_path / "o").exists()
    # without an eval split the one file is fine
    assert _tune(tiny_path("bert"), sentiment_dir / "train.parquet", tmp_path / "o",
                 eval_split=None)
