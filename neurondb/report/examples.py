"""The report's "top neurons and their top examples" section.

The ranking is the skill ranking by default (the first ``predictivity`` ranking, one named
``skill`` before others), else the first that is not random. Examples come from a run the
ranking was computed on, at the run's input slots only: a soft-prompt slot (``prompt:<i>``)
is the same learned vector in every sentence, so a neuron that peaks there says nothing about
the sentence. Each example shows the firing token in context, a window of tokens around it
with the firing token marked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from neurondb.report import html as H
from neurondb.report.collect import ResultTable, StoreContents
from neurondb.report.html import Section
from neurondb.report.summaries import top_neurons
from neurondb.store.reader import Store

#: Neurons shown, examples per neuron, and tokens of context before and after the firing one.
TOP_NEURONS = 5
EXAMPLES_PER_NEURON = 5
BEFORE, AFTER = 12, 4
HINT = "needs a ranking; make one with `neurondb rank STORE`"


def choose_ranking(c: StoreContents) -> ResultTable | None:
    """The skill ranking (predictivity; one named ``skill`` first), else the first that is
    not random, else the first; None without rankings."""
    rs = c.tables("rankings")
    if not rs:
        return None

    def method(r: ResultTable) -> str:
        m = r.meta.get("method")
        if m is None and "method" in r.frame.columns and len(r.frame):
            m = r.frame["method"].iloc[0]
        return str(m or "")

    skill = [r for r in rs if method(r) == "predictivity"]
    if skill:
        return next((r for r in skill if r.name == "skill"), skill[0])
    return next((r for r in rs if method(r) != "random"), rs[0])


def ranking_runs(r: ResultTable) -> list[str]:
    """The evaluation runs a ranking names in its provenance (``eval`` or ``runs``)."""
    for key in ("eval", "runs"):
        v = r.meta.get(key)
        if isinstance(v, list) and v:
            return [str(x) for x in v]
        if isinstance(v, str) and v:
            return [v]
    return []


def input_slots(store: Store, run: str) -> list[str]:
    """The run's captured slots that are not soft-prompt slots."""
    slots = pd.unique(store.rows(run=run).column("slot").to_numpy(zero_copy_only=False))
    return [str(s) for s in slots if not str(s).startswith("prompt:")]


def _piece(tok: str) -> str:
    return tok[2:] if tok.startswith("##") else f" {tok}"


def context(tokens: pd.DataFrame, position: int, before: int = BEFORE,
            after: int = AFTER) -> str:
    """HTML of the tokens around ``position`` (soft-prompt tokens left out), the token at
    ``position`` in ``<mark>``; word pieces (``##x``) are joined to the word before."""
    t = tokens[(tokens["kind"] != "prompt")].sort_values("position")
    pos = t["position"].to_numpy()
    at = int(np.searchsorted(pos, position))
    lo, hi = max(0, at - before), min(len(t), at + after + 1)
    out = ["…" if lo > 0 else ""]
    for p, tok in zip(pos[lo:hi], t["token"].to_numpy()[lo:hi]):
        piece = _piece(str(tok))
        if p == position:
            lead = " " if piece.startswith(" ") else ""
            out.append(f"{lead}<mark>{H.esc(piece.strip())}</mark>")
        else:
            out.append(H.esc(piece))
    out.append(" …" if hi < len(t) else "")
    return "".join(out).strip()


def _label(labels: list[str], v: object) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    i = int(v)  # type: ignore[call-overload]
    return f"{i} ({labels[i]})" if 0 <= i < len(labels) else str(i)


def _title(n: dict) -> str:
    """``stack layer L, neuron i (score s, peak slot t, above its baseline on <class>)``."""
    from neurondb.report.sections import score

    cls = n.get("class")
    kind = f", above its baseline on {cls}" if isinstance(cls, str) and cls else ""
    where = f", peak slot {n['slot']}" if isinstance(n.get("slot"), str) else ""
    return (f"{n['stack']} layer {n['layer']}, neuron {n['neuron']} (score "
            f"{score(n['score'])}{where}{kind})")


def neuron_table(store: Store, run: str, n: dict, slots: list[str], labels: list[str]) -> str:
    """The top examples of one neuron at ``slots``, each with its firing token in context."""
    from neurondb.query.top import top_examples

    stack = str(n["stack"])
    ex = top_examples(store, run, int(n["layer"]), int(n["neuron"]), stack=stack,
                      k=EXAMPLES_PER_NEURON, slots=slots)
    toks = store.tokens(run=run).to_pandas()
    toks = toks[(toks["stack"] == stack) & toks["example_id"].isin(ex["example_id"])]
    by_ex = dict(tuple(toks.groupby("example_id")))
    ex["context"] = [context(by_ex[e], int(p)) if e in by_ex else H.esc(str(t))
                     for e, p, t in zip(ex["example_id"], ex["position"], ex["text"])]
    ex = ex.rename(columns={"value": "activation"})
    return H.table(ex, ["example_id", "activation", "slot", "position", "label", "pred",
                        "context"],
                   formats={"label": lambda v: _label(labels, v),
                            "pred": lambda v: _label(labels, v)},
                   text_columns=["context"], raw_columns=["context"])


def input_peaked(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The ranking's neurons whose peak slot is an input slot (their examples show what they
    respond to), with a sentence saying so; all neurons when the ranking has no slot column or
    every peak is at a soft-prompt slot."""
    if "slot" not in frame.columns:
        return frame, "Top neurons by score."
    keep = ~frame["slot"].astype(str).str.startswith("prompt:")
    if not keep.any():
        return frame, ("Every neuron peaks at a soft-prompt slot; the top ones by score are "
                       "shown at the input slots.")
    return frame[keep], (f"Top neurons by score among the {int(keep.sum())} of {len(frame)} "
                         "whose peak slot is an input slot (a neuron that peaks at a "
                         "soft-prompt slot fires on the prompt, not on the sentence).")


def top_examples_section(c: StoreContents, store: Store) -> Section:
    """For the top neurons of the skill ranking, the examples on which each fires most."""
    from neurondb.query.errors import QueryError

    sec = Section("examples", "Top neurons and their top examples", note=HINT)
    r = choose_ranking(c)
    if r is None:
        return sec
    runs = {i.run: i for i in store.runs()}
    named = ranking_runs(r)
    cands = [runs[n] for n in named if n in runs and runs[n].mode == "tokens"]
    if not cands and not named:
        cands = [i for i in runs.values() if i.mode == "tokens"]
    if not cands:
        where = (f"its run(s) {', '.join(named)}" if named else "the store")
        sec.note = (f"ranking {r.name!r}: {where} hold no per-token activations in this store "
                    "(running statistics only); extract a run with per-token tensors to see "
                    "examples")
        return sec
    info = cands[0]
    slots = input_slots(store, info.run)
    if not slots:
        sec.note = (f"ranking {r.name!r}: run {info.run} captured only soft-prompt slots, "
                    "which hold the same vector in every sentence; extract with "
                    "--positions mask or first to see examples")
        return sec
    parts = [H.para(f"Ranking {r.name}, run {info.run} ({info.split}, {info.n_examples} "
                    f"examples): per example, its highest activation at the input slots "
                    f"({', '.join(slots)}; soft-prompt slots are the same in every sentence and "
                    f"are left out), shown in context with the firing token marked; "
                    f"{EXAMPLES_PER_NEURON} examples per neuron.", "meta")]
    frame, which = input_peaked(r.frame)
    parts.append(H.para(which, "meta"))
    shown = 0
    for n in top_neurons(frame, TOP_NEURONS).to_dict("records"):
        parts.append(H.heading(_title(n)))
        try:
            parts.append(neuron_table(store, info.run, n, slots, list(info.labels)))
        except QueryError as e:
            parts.append(H.para(f"no examples: {e}", "note"))
            continue
        shown += 1
    sec.body = "".join(parts)
    sec.summary = f"{shown} neurons of ranking {r.name} on run {info.run}"
    return sec
