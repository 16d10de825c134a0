"""The report's findings (each claim of the papers against what the store shows) and its
condensation section (the prompt re-tuned on the pruned model, before and after)."""

from __future__ import annotations

import pandas as pd

from neurondb.findings import (
    DOES_NOT_HOLD,
    HOLDS,
    Finding,
    condensation_finding,
    pruning_finding,
    suppression_finding,
)
from neurondb.report import html as H
from neurondb.report.collect import StoreContents
from neurondb.report.html import Section
from neurondb.report.summaries import search_margin, suppression_summary

CONDENSE_HINT = ("not included; pass --condensed DIR (a `neurondb tune --from-prompt` "
                 "directory re-tuned on a pruned model)")


def _suppression(c: StoreContents) -> list[Finding]:
    out = []
    for r in c.tables("suppression"):
        s = suppression_summary(r.frame)
        for _, g in s.groupby("mode", sort=False):
            f = suppression_finding(g.to_dict("records"))
            if f is not None:
                f.evidence = f"{r.name}, {g['mode'].iloc[0]} suppression: {f.evidence}"
                out.append(f)
    return out


def _pruning(c: StoreContents) -> list[Finding]:
    out = []
    for p in c.pruning:
        if p.search is None:
            continue
        f = p.search.frame
        margin = search_margin(p.search.meta, f) or 0.0
        chosen = f[f["chosen"].astype(bool)]
        base, n = float(f["baseline_accuracy"].iloc[0]), int(f["n"].max())
        if not len(chosen):
            out.append(pruning_finding(None, base, None, margin, n))
            continue
        acc = float(chosen["accuracy"].iloc[0])
        if p.evaluation is not None:
            ev = p.evaluation.frame
            full, pruned = ev[ev["model"] == "full"], ev[ev["model"] == "pruned"]
            if len(full) and len(pruned):
                base, acc = float(full["accuracy"].iloc[0]), float(pruned["accuracy"].iloc[0])
        out.append(pruning_finding(float(chosen["ratio"].iloc[0]), base, acc, margin, n))
    return out


def findings(c: StoreContents) -> list[Finding]:
    """Every finding the store (and the re-tuned prompts) support, in page order."""
    out = _suppression(c) + _pruning(c)
    for k in c.condensed or []:
        if k.n:
            out.append(condensation_finding(k.before, k.after, k.n))
    return out


def _verdict_html(v: str) -> str:
    cls = "holds" if v == HOLDS else "not" if v == DOES_NOT_HOLD else "noisy"
    return f'<span class="verdict-{cls}">{H.esc(v)}</span>'


def findings_section(c: StoreContents) -> Section:
    """One row per claim: the claim, its source, the verdict, and the numbers."""
    sec = Section("findings", "Findings against the papers",
                  note="no suppression, pruning or condensation result to judge")
    fs = findings(c)
    if not fs:
        return sec
    df = pd.DataFrame([f.to_dict() for f in fs])
    sec.body = (H.para("Each claim against this store's results. Rule: the measured value is "
                       "set against the spread of its control (the random draws of a "
                       "suppression rate; two binomial standard errors of an accuracy). "
                       "Beyond the spread on the claimed side: holds; beyond it on the other "
                       "side: does not hold; inside it: too noisy to tell.", "meta")
                + H.table(df, ["claim", "source", "verdict", "evidence"],
                          formats={"verdict": _verdict_html}, raw_columns=["verdict"],
                          text_columns=["evidence"]))
    sec.summary = ", ".join(f"{f.verdict}" for f in fs)
    return sec


def condensation_section(c: StoreContents) -> Section:
    """Per re-tuned prompt: accuracy on the pruned model before and after re-tuning."""
    sec = Section("condensation", "Knowledge condensation (re-tuned prompt on the pruned model)",
                  note=CONDENSE_HINT)
    if not c.condensed:
        return sec
    rows = [{"seed": k.seed.seed, "model": k.seed.model, "epochs": len(k.seed.records),
             "before": k.before, "after": k.after, "change": k.after - k.before,
             "validation examples": k.n, "from prompt": k.source_prompt,
             "directory": str(k.seed.path)} for k in c.condensed]
    fmt3 = lambda v: f"{float(v):.3f}"  # noqa: E731
    sec.body = (H.para("The prompt (and head) tuned on the full model, evaluated on the pruned "
                       "model (before), then re-tuned on it with the model frozen (after).",
                       "meta")
                + H.table(pd.DataFrame(rows), formats={"before": fmt3, "after": fmt3,
                                                       "change": lambda v: f"{float(v):+.3f}"},
                          text_columns=["model", "from prompt", "directory"]))
    sec.summary = f"{len(rows)} re-tuned prompt(s)"
    return sec
