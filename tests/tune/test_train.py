"""Prompt tuning on tiny models: it learns, it saves bit for bit, extraction reproduces it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import neurondb
from neurondb.runtime.evaluate import evaluate
from neurondb.runtime.prompt import PROMPT_JSON, load_prompt
from neurondb.store.manifest import model_fingerprint
from neurondb.tune.curve import CURVE_CSV, CURVE_PNG, read_curve_csv
from neurondb.tune.train import PromptTuner, TuneConfig, seed_dir

TEMPLATE = "{text} It was {mask}."
VERB = ["terrible", "great"]


def _tuner(model, data, out, **kw) -> PromptTuner:
    base = dict(prompt_tokens=4, seeds=(1,), epochs=6, batch_size=8, lr=0.1, patience=0,
                template=TEMPLATE, verbalizer=VERB, progress=False)
    base.update(kw)
    return PromptTuner(TuneConfig(model=str(model), data=str(data), out=out, **base))


@pytest.fixture(scope="module")
def mlm_job(tmp_path_factory, sharp_path, sentiment_dir):
    out = tmp_path_factory.mktemp("tune") / "mlm"
    tuner = _tuner(sharp_path("lm"), sentiment_dir, out)
    state = {k: v.detach().clone() for k, v in tuner.lm.model.state_dict().items()}
    tuned = tuner.train(1)
    d = tuner.save(tuned)
    return tuner, tuned, d, state


def test_tuning_lowers_the_training_loss(mlm_job):
    tuner, tuned, _, _ = mlm_job
    losses = [r.train_loss for r in tuned.records]
    assert len(losses) == 6
    assert losses[-1] < 0.6 * losses[0], losses
    # the kept prompt is the best validation epoch, and it beats chance on this task
    accs = [r.eval_accuracy for r in tuned.records]
    assert tuned.evaluation.accuracy == max(accs)
    best = max(tuned.records, key=lambda r: (r.eval_accuracy, -r.eval_loss))  # ties: lower loss
    assert tuned.best_epoch == best.epoch
    assert tuned.evaluation.loss == best.eval_loss
    assert tuned.evaluation.accuracy >= 0.75


def test_model_stays_frozen(mlm_job):
    tuner, _, _, state = mlm_job
    assert not any(p.requires_grad for p in tuner.lm.model.parameters())
    after = tuner.lm.model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)


def test_saved_prompt_reloads_bit_for_bit_with_meta(mlm_job, sentiment_dir):
    tuner, tuned, d, _ = mlm_job
    assert d == seed_dir(tuner.cfg.out, 1)
    sp = load_prompt(d)
    assert sp.embeddings.dtype == torch.float32
    assert torch.equal(sp.embeddings, tuned.prompt.embeddings)
    assert sp.head_weight is None
    m = json.loads((d / PROMPT_JSON).read_text())
    assert m["model_fingerprint"] == model_fingerprint(tuner.lm.model)
    assert m["d_model"] == 32 and m["n_tokens"] == 4
    assert (m["template"], m["verbalizer"], m["readout"]) == (TEMPLATE, VERB, "mlm")
    assert m["seed"] == 1 and m["epochs_run"] == 6 and m["best_epoch"] == tuned.best_epoch
    assert m["best_eval_accuracy"] == tuned.evaluation.accuracy
    assert m["hparams"]["lr"] == 0.1 and m["hparams"]["prompt_tokens"] == 4
    assert m["data"]["fingerprint"] == tuner.train_data.fingerprint
    assert m["data"]["key"] == str(sentiment_dir.resolve())
    assert m["labels"] == ["0", "1"]
    curve = read_curve_csv(d / CURVE_CSV)
    assert [r.train_loss for r in curve] == [r.train_loss for r in tuned.records]
    assert (d / CURVE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_extract_with_the_tuned_prompt_reproduces_its_predictions(mlm_job, sentiment_dir,
                                                                  tmp_path):
    tuner, tuned, d, _ = mlm_job
    # template and verbalizer come from the prompt's meta
    st = neurondb.extract(str(tuner.cfg.model), str(sentiment_dir), tmp_path / "s",
                          prompt=str(d), positions="mask", dtype="float32", progress=False)
    ex = st.examples(split="validation").to_pandas().sort_values("example_id")
    assert st.run().accuracy == pytest.approx(tuned.evaluation.accuracy, abs=0)
    np.testing.assert_array_equal(ex["pred"].to_numpy(), tuned.evaluation.predictions)
    np.testing.assert_allclose(np.stack(ex["label_logits"].to_numpy()),
                               tuned.evaluation.logits, atol=1e-5, rtol=0)
    st.close()


def test_peft_adapter_beside_the_prompt_gives_the_same_logits(mlm_job):
    from peft import PeftModel
    from transformers import AutoModelForMaskedLM

    tuner, tuned, d, _ = mlm_job
    base = AutoModelForMaskedLM.from_pretrained(tuner.cfg.model).eval()
    pm = PeftModel.from_pretrained(base, d)
    ro = tuner.readout
    data = tuner.eval_data
    batch = ro.encoder.encode(np.arange(len(data)), data.texts)
    with torch.no_grad():
        out = pm(input_ids=batch.enc["input_ids"], attention_mask=batch.enc["attention_mask"])
    rows = torch.arange(len(data))
    theirs = out.logits[rows, torch.as_tensor(batch.readout_pos)][:, ro.verb_ids]
    ours = evaluate(tuner.lm, load_prompt(d), data, batch_size=len(data)).logits
    np.testing.assert_allclose(theirs.numpy(), ours, atol=1e-5, rtol=0)


def test_same_seed_same_prompt_other_seed_other_prompt(sharp_path, sentiment_dir, tmp_path):
    tuner = _tuner(sharp_path("lm"), sentiment_dir, tmp_path / "o", epochs=2,
                   max_examples=16)
    a, b, c = tuner.train(3), tuner.train(3), tuner.train(4)
    assert torch.equal(a.prompt.embeddings, b.prompt.embeddings)
    assert [r.train_loss for r in a.records] == [r.train_loss for r in b.records]
    assert not torch.allclose(a.prompt.embeddings, c.prompt.embeddings)


def test_head_path_for_a_base_encoder(sharp_path, sentiment_dir, tmp_path):
    """An encoder without an LM head (readout auto gives none) is tuned with a linear head,
    saved with the prompt; extraction reads the label through it."""
    out = tmp_path / "head"
    tuner = _tuner(sharp_path("base"), sentiment_dir, out, verbalizer=None, epochs=8,
                   lr=0.1, head_lr=0.05, pool="mask")
    assert tuner.lm.readout == "head" and tuner.readout.n_classes == 2
    tuned = tuner.train(2)
    d = tuner.save(tuned)
    losses = [r.train_loss for r in tuned.records]
    assert losses[-1] < 0.6 * losses[0], losses
    sp = load_prompt(d)
    assert torch.equal(sp.embeddings, tuned.prompt.embeddings)
    assert torch.equal(sp.head_weight, tuned.prompt.head_weight)
    assert torch.equal(sp.head_bias, tuned.prompt.head_bias)
    assert sp.head_weight.shape == (2, 32) and sp.pool == "mask"
    assert sp.meta["readout"] == "head" and sp.meta["verbalizer"] is None
    assert not (d / "adapter_config.json").exists()  # PEFT cannot carry the head
    st = neurondb.extract(str(tuner.cfg.model), str(sentiment_dir), tmp_path / "s",
                          prompt=str(d), positions="mask", dtype="float32", progress=False)
    assert st.run().readout == "head"
    ex = st.examples(split="validation").to_pandas().sort_values("example_id")
    np.testing.assert_array_equal(ex["pred"].to_numpy(), tuned.evaluation.predictions)
    np.testing.assert_allclose(np.stack(ex["label_logits"].to_numpy()),
                               tuned.evaluation.logits, atol=1e-5, rtol=0)
    st.close()


@pytest.mark.parametrize("family,head,pool,readout", [
    ("gpt2", "lm", "mask", "causal"), ("t5", "lm", "mask", "seq2seq"),
    ("roberta", "cls", "mask", "classifier"), ("bert", "base", "first", "head"),
    ("bert", "base", "mean", "head")])
def test_other_readouts_match_extraction(family, head, pool, readout, tiny_path, sentiment_dir,
                                         tmp_path):
    """Causal LM (next token), T5 (first decoder step), a frozen classification head, and a
    tuned head pooled at the first token or the mean: tuning runs, and extraction with the
    tuned prompt gives the same logits."""
    tuner = _tuner(tiny_path(family, head), sentiment_dir, tmp_path / "o", epochs=2, pool=pool,
                   verbalizer=VERB if head == "lm" else None)
    assert tuner.lm.readout == readout
    tuned = tuner.train(1)
    d = tuner.save(tuned)
    st = neurondb.extract(str(tuner.cfg.model), str(sentiment_dir), tmp_path / "s",
                          prompt=str(d), positions="first", dtype="float32", progress=False)
    assert st.run().readout == tuned.prompt.meta["readout"]
    ex = st.examples(split="validation").to_pandas().sort_values("example_id")
    np.testing.assert_array_equal(ex["pred"].to_numpy(), tuned.evaluation.predictions)
    np.testing.assert_allclose(np.stack(ex["label_logits"].to_numpy()),
                               tuned.evaluation.logits, atol=1e-5, rtol=0)
    st.close()


def test_tune_prompt_writes_one_directory_per_seed(sharp_path, sentiment_dir, tmp_path):
    from neurondb.tune import tune_prompt

    dirs = tune_prompt(str(sharp_path("lm")), str(sentiment_dir), tmp_path / "o",
                       prompt_tokens=2, seeds=(5, 7), epochs=1, template=TEMPLATE,
                       verbalizer=VERB, progress=False)
    assert dirs == [tmp_path / "o" / "seed-5", tmp_path / "o" / "seed-7"]
    assert [load_prompt(d).meta["seed"] for d in dirs] == [5, 7]
    assert not any(p.name.startswith(".") for p in (tmp_path / "o").iterdir())


def test_the_tuned_text_limit_carries_to_extract_evaluation_and_scoring(sharp_path, sentiment_dir,
                                                                        tmp_path):
    """A prompt tuned on inputs cut to 8 tokens ([CLS] text It was [MASK] . [SEP]: two words of
    the 3-5 word sentences) is extracted, evaluated and scored on inputs cut the same way when
    no --max-length is given."""
    from neurondb.intervene.scoring import prepare_scorer
    from neurondb.runtime.evaluate import readout_for

    tuner = _tuner(sharp_path("lm"), sentiment_dir, tmp_path / "short", epochs=2, max_length=8)
    tuned = tuner.train(1)
    d = tuner.save(tuned)
    sp = load_prompt(d)
    assert sp.max_length == 8
    assert readout_for(tuner.lm, sp).encoder.max_length == 8
    assert readout_for(tuner.lm, sp, max_length=9).encoder.max_length == 9  # an explicit limit wins
    scorer = prepare_scorer(None, str(sentiment_dir), prompt=d, lm=tuner.lm)
    assert scorer.readout.encoder.max_length == 8
    np.testing.assert_array_equal(evaluate(tuner.lm, sp, scorer.data).predictions,
                                  tuned.evaluation.predictions)
    st = neurondb.extract(str(tuner.cfg.model), str(sentiment_dir), tmp_path / "s",
                          prompt=str(d), positions="mask", dtype="float32", progress=False)
    assert st.run().max_length == 8
    assert st.examples().to_pandas()["n_tokens"].max() <= 4 + 8  # prompt + the cut input
    ex = st.examples(split="validation").to_pandas().sort_values("example_id")
    np.testing.assert_allclose(np.stack(ex["label_logits"].to_numpy()),
                               tuned.evaluation.logits, atol=1e-5, rtol=0)
    st.close()
