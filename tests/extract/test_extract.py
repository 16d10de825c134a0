"""Extraction into a store: round trip against a fresh forward pass, gradients, running
statistics, soft prompts, positions and readouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurondb
from neurondb.runtime.forward import label_logits, model_inputs, target_value
from neurondb.runtime.hooks import FFNCapture
from neurondb.runtime.model import load_model

TEMPLATE = "{text} It was {mask}."
VERB = ["bad", "good"]


def _fresh_h(model_dir, text, prompt=None, readout="auto", grad=False, target_label=None,
             verb=VERB, template=TEMPLATE):
    """h at every position of one example, run alone (no batching), float32."""
    from neurondb.runtime.encode import Encoder
    from neurondb.runtime.model import verbalizer_ids
    from neurondb.runtime.templates import Template

    lm = load_model(str(model_dir), readout, "cpu")
    P = 0 if prompt is None else prompt.n_tokens
    enc = Encoder(lm.tokenizer, Template(template), lm.readout, P, 128)
    batch = enc.encode(np.array([0]), [[text]])
    T = P + int(batch.lengths[0])
    cap_stack = lm.adapter.stacks[0].name
    with FFNCapture(lm.model, lm.adapter, grad=grad) as cap:
        cap.select(cap_stack, torch.zeros(T, dtype=torch.long), torch.arange(T))
        if lm.is_seq2seq:
            cap.select("decoder", torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
        with torch.enable_grad() if grad else torch.no_grad():
            out = lm.model(**model_inputs(lm, batch, prompt, need_embeds=grad))
            vids = verbalizer_ids(lm.tokenizer, verb) if lm.readout in ("mlm", "causal", "seq2seq") else None
            logits = label_logits(lm, out, batch, vids, prompt)
            if grad:
                target_value(logits, torch.tensor([target_label]), "gold").sum().backward()
    return cap, logits


@pytest.mark.parametrize("family", ["bert", "gpt2", "t5", "llama"])
def test_round_trip_equals_fresh_forward(tmp_path, tiny_path, sentiment_dir, family):
    model_dir = tiny_path(family)
    readout = {"bert": "mlm", "gpt2": "causal", "t5": "seq2seq", "llama": "causal"}[family]
    st = neurondb.extract(str(model_dir), str(sentiment_dir), tmp_path / "s", positions="all",
                          template=TEMPLATE, verbalizer=VERB, dtype="float32", grad=True,
                          batch_size=5, progress=False)
    info = st.run()
    assert info.readout == readout and info.grad and info.n_examples == 12
    ex = st.examples().to_pandas().set_index("example_id")
    stacks = st.shape.stacks
    for eid in (0, 7, 11):
        text = ex.loc[eid, "text"].replace(" It was [MASK].", "").replace(" It was <extra_id_0>.", "")
        text = text.replace(" It was", "") if readout == "causal" else text
        cap, logits = _fresh_h(model_dir, text, grad=True, target_label=int(ex.loc[eid, "label"]))
        np.testing.assert_allclose(ex.loc[eid, "label_logits"], logits[0].detach().numpy(),
                                   rtol=1e-4, atol=1e-5)
        assert ex.loc[eid, "pred"] == int(logits.argmax())
        for stack in stacks:
            rows = st.rows(stack=stack).to_pandas()
            mine = rows[rows.example_id == eid].sort_values("position")
            assert len(mine) == (int(ex.loc[eid, "n_tokens"]) if stack == stacks[0] else 1)
            for layer in range(2):
                stored = st.activations(layer, stack=stack, rows=mine.row.to_numpy())
                fresh = cap.acts[(stack, layer)][mine.position.to_numpy().copy()].numpy()
                np.testing.assert_allclose(stored, fresh, rtol=1e-4, atol=1e-5)
                g_stored = st.gradients(layer, stack=stack, rows=mine.row.to_numpy())
                g_fresh = cap.grads[(stack, layer)][mine.position.to_numpy().copy()].numpy()
                np.testing.assert_allclose(g_stored, g_fresh, rtol=1e-3, atol=1e-6)
    st.close()


def test_soft_prompt_positions_and_slots(tmp_path, tiny_path, sentiment_dir):
    from neurondb.runtime.prompt import SoftPrompt

    torch.manual_seed(1)
    pr = SoftPrompt(torch.randn(4, 32))
    pdir = pr.save(tmp_path / "prompt")
    st = neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), tmp_path / "s",
                          prompt=str(pdir), template=TEMPLATE, verbalizer=VERB,
                          positions="prompt,mask,first", dtype="float32", progress=False)
    info = st.run()
    assert info.n_prompt == 4 and info.prompt_hash == pr.sha256
    rows = st.rows().to_pandas()
    per_ex = rows.groupby("example_id").slot.apply(list)
    assert all(s == ["prompt:0", "prompt:1", "prompt:2", "prompt:3", "first", "mask"]
               for s in per_ex)
    assert (rows[rows.slot == "first"].position == 4).all()
    toks = st.tokens().to_pandas()
    mask_pos = toks[toks.kind == "mask"].set_index("example_id").position
    got = rows[rows.slot == "mask"].set_index("example_id").position
    assert (mask_pos.sort_index() == got.sort_index()).all()
    assert (toks[toks.position < 4].kind == "prompt").all()
    # the store equals a fresh forward pass with the prompt prepended
    ex = st.examples().to_pandas().set_index("example_id")
    text = ex.loc[3, "text"].replace(" It was [MASK].", "")
    cap, logits = _fresh_h(tiny_path("bert"), text, prompt=pr)
    mine = rows[rows.example_id == 3]
    np.testing.assert_allclose(st.activations(1, rows=mine.row.to_numpy()),
                               cap.acts[("encoder", 1)][mine.position.to_numpy()].numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ex.loc[3, "label_logits"], logits[0].numpy(), rtol=1e-4, atol=1e-5)
    st.close()


def test_running_stats_equal_per_token_moments(tmp_path, tiny_path, sentiment_dir):
    st = neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), tmp_path / "s",
                          split="train", stats_split="train", template=TEMPLATE,
                          verbalizer=VERB, positions="mask,first,last", dtype="float32",
                          batch_size=7, progress=False)
    tok_run = st.run(split="train", mode="tokens")
    stats_run = st.run(split="train", mode="stats")
    assert stats_run.run == tok_run.run + "-stats"
    stats = st.stats(stats_run.run)
    rows = st.rows(run=tok_run.run).to_pandas()
    labels = st.examples(run=tok_run.run).to_pandas().set_index("example_id").label
    for layer in range(2):
        x = st.activations(layer, run=tok_run.run).astype(np.float64)
        for slot in ("mask", "first", "last"):
            sel = (rows.slot == slot).to_numpy()
            k = stats.slot("encoder", slot)
            assert stats.count["encoder"][k] == sel.sum() == 24
            np.testing.assert_allclose(stats.mean("encoder", layer)[k], x[sel].mean(0), atol=1e-6)
            np.testing.assert_allclose(stats.var("encoder", layer)[k], x[sel].var(0), atol=1e-6)
            lab = labels.loc[rows.example_id[sel]].to_numpy()
            for c in (0, 1):
                np.testing.assert_allclose(stats.label_mean("encoder", layer)[c, k],
                                           x[sel][lab == c].mean(0), atol=1e-6)
    # stats mode stores no per-token tensors
    with pytest.raises(neurondb.store.errors.StoreError, match="no activations"):
        st.activations(0, run=stats_run.run)
    st.close()


def test_float16_and_bfloat16_storage(tmp_path, tiny_path, sentiment_dir):
    ref = None
    for dtype, tol in (("float32", 0), ("float16", 2e-3), ("bfloat16", 1e-2)):
        st = neurondb.extract(str(tiny_path("llama")), str(sentiment_dir), tmp_path / dtype,
                              template=TEMPLATE, verbalizer=VERB, positions="all", dtype=dtype,
                              progress=False)
        x = st.activations(1)
        assert x.dtype == np.float32
        if ref is None:
            ref = x
        else:
            np.testing.assert_allclose(x, ref, atol=tol * np.abs(ref).max(), rtol=tol)
            assert not np.array_equal(x, ref)  # really stored at lower precision
        st.close()


def test_classifier_readout_and_accuracy_is_a_query(tmp_path, tiny_path, sentiment_dir):
    st = neurondb.extract(str(tiny_path("roberta", head="cls")), str(sentiment_dir),
                          tmp_path / "s", positions="first", progress=False)
    info = st.run()
    assert info.readout == "classifier"
    acc = st.sql("SELECT avg(correct::INT) FROM examples").fetchall()[0][0]
    assert acc == pytest.approx(info.accuracy)
    st.close()


def test_activations_only_and_several_runs_in_one_store(tmp_path, tiny_path, sentiment_dir):
    out = tmp_path / "s"
    neurondb.extract(str(tiny_path("bert", head="base")), str(sentiment_dir), out,
                     positions="first,last", progress=False).close()
    st = neurondb.extract(str(tiny_path("bert", head="base")), str(sentiment_dir), out,
                          split="train", positions="first", progress=False)
    assert {i.split for i in st.runs()} == {"validation", "train"}
    assert st.run(split="train").readout == "none"
    assert (st.examples(split="train").column("pred").to_numpy() == -1).all()
    n = st.sql("SELECT split, count(*) FROM rows JOIN runs USING (run) GROUP BY split "
               "ORDER BY split").fetchall()
    assert n == [("train", 24), ("validation", 24)]
    st.close()


def test_memory_does_not_hold_the_dataset(tmp_path, tiny_path, sentiment_dir):
    """Rows are written chunk by chunk: the HDF5 writer buffer is bounded by its chunk size."""
    from neurondb.store.tensors import TensorWriter, chunk_rows_for

    w = TensorWriter(tmp_path / "t.h5", {"encoder": (4096,)}, "float16")
    for _ in range(50):
        w.append("encoder", 0, np.ones((100, 4096), np.float16))
        assert w.fill[("encoder", 0)] < chunk_rows_for(4096, 2)
    w.close()
    from neurondb.store.tensors import TensorReader

    with TensorReader(tmp_path / "t.h5") as r:
        assert r.shape("encoder", 0) == (5000, 4096)
        assert r.read("encoder", 0, neurons=[5, 1]).shape == (5000, 2)
