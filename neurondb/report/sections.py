"""The report's sections: each turns what :mod:`neurondb.report.collect` read into HTML with
its figures, or, when the store holds none of its results, a one-line note naming the command
that makes them."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd

from neurondb.report import figures
from neurondb.report import html as H
from neurondb.report.collect import ResultTable, StoreContents, StoreSummary
from neurondb.report.html import Section
from neurondb.report.summaries import (
    TOP_FRACTION,
    correlation_matrices,
    overlap_matrices,
    pruned_comparison,
    search_margin,
    suppression_summary,
    top_neurons,
    transfer_summary,
)
from neurondb.store.reader import Store

#: How many neurons the ranking table lists.
TOP_TABLE = 20

HINTS = {
    "rankings": "none in this store; make one with `neurondb rank STORE --method predictivity`",
    "top": "needs a ranking; make one with `neurondb rank STORE`",
    "correlations": "none in this store; make them with `neurondb correlate STORE --rankings A,B`",
    "overlaps": "none in this store; make them with `neurondb overlap STORE --runs A,B`",
    "masks": "none in this store; make one with `neurondb mask STORE --ranking NAME`",
    "transfers": "none in this store; make them with `neurondb transfer --store STORE`",
    "suppression": "none in this store; make them with `neurondb suppress`",
    "pruning": "none in this store; make them with `neurondb prune --search`",
    "prompts": "not included; pass --prompts DIR (a `neurondb tune --out` directory)",
}


def pct(v: object, digits: int = 1) -> str:
    """A fraction as a percentage (``0.25`` -> ``25.0%``)."""
    if v is None or not np.isfinite(float(v)):  # type: ignore[arg-type]
        return "—"
    return f"{100 * float(v):.{digits}f}%"


def times(v: object) -> str:
    """A ratio as ``1.80×``."""
    if v is None or not np.isfinite(float(v)):  # type: ignore[arg-type]
        return "—"
    return f"{float(v):.2f}×"


def score(v: object) -> str:
    """A ranking score: 4 decimals, or 4 significant digits when far from 1 (attribution)."""
    if v is None or not np.isfinite(float(v)):  # type: ignore[arg-type]
        return "—"
    x = float(v)  # type: ignore[arg-type]
    return f"{x:.4f}" if x == 0 or 0.01 <= abs(x) < 1e4 else f"{x:.4g}"


def count(v: object) -> str:
    """An integer with thousands separators."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    return f"{int(v):,}"  # type: ignore[call-overload]


def acc(v: object) -> str:
    """An accuracy in [0, 1] to three decimals."""
    if v is None or not np.isfinite(float(v)):  # type: ignore[arg-type]
        return "—"
    return f"{float(v):.3f}"


def _params(r: ResultTable, skip: tuple[str, ...] = ()) -> str:
    """A one-line summary of a result's provenance (its scalar and short list parameters)."""
    drop = {"name", "table", "store", "created", "shape", "ranking_params", *skip}
    items = []
    for k, v in r.meta.items():
        if k in drop or v is None or isinstance(v, dict):
            continue
        if isinstance(v, list):
            if len(v) > 8:
                continue
            v = ", ".join(map(str, v))
        items.append(f"{k}: {v}")
    return "; ".join(items)


def _meta_line(r: ResultTable, skip: tuple[str, ...] = ()) -> str:
    line = _params(r, skip)
    created = r.meta.get("created")
    return H.para(f"{line}{'; ' if line and created else ''}{'created ' + created if created else ''}",
                  "meta") if (line or created) else ""


# -- header ------------------------------------------------------------------------------------
def header(s: StoreSummary, contents: StoreContents) -> str:
    """Provenance: the model, its shape, every run and how many results of each kind."""
    widths = "; ".join(f"{k}: {len(v)} layers × " +
                       (str(v[0]) if len(set(v)) == 1 else ",".join(map(str, v)))
                       for k, v in s.widths.items())
    counts = ", ".join(f"{k}: {len(v)}" for k, v in contents.results.items() if v) or "none"
    items = [("store", ", ".join(map(str, s.paths))),
             ("model", s.model + (f" (revision {s.revision})" if s.revision else "")),
             ("model class", s.model_class or None), ("fingerprint", s.fingerprint),
             ("family", s.family), ("d_model", s.d_model), ("FFN neurons", f"{s.n_neurons} ({widths})"),
             ("created", s.created or None),
             ("neurondb", s.libraries.get("neurondb")),
             ("runs", f"{len(s.runs)} ({sum(r.n_examples for r in s.runs)} examples, "
                      f"{sum(r.n_rows for r in s.runs)} token rows)"),
             ("results", counts)]
    out = H.definition_table([(k, v) for k, v in items if v is not None])
    if s.runs:
        runs = pd.DataFrame([{
            "run": r.run, "split": r.split, "mode": r.mode, "dataset": r.dataset,
            "template": r.template or "", "prompt": (f"{r.n_prompt} tokens" if r.n_prompt else "")
            + (f" ({r.prompt})" if r.prompt else ""), "positions": ",".join(r.positions),
            "examples": r.n_examples, "token rows": r.n_rows, "accuracy": r.accuracy,
            "dtype": r.dtype or "", "gradients": r.grad} for r in s.runs])
        out += H.heading("Runs") + H.table(runs, formats={"accuracy": acc},
                                           text_columns=["template"])
    else:
        out += H.para("The store holds no complete run.", "note")
    return out


# -- 1. rankings -------------------------------------------------------------------------------
def rankings(c: StoreContents) -> Section:
    """Score by layer (max, mean, layers of the global top 1%) and the top 20 neurons."""
    sec = Section("rankings", "Neuron rankings by layer", note=HINTS["rankings"])
    parts = []
    for r in c.tables("rankings"):
        f = r.frame
        method = r.meta.get("method") or (f["method"].iloc[0] if "method" in f.columns else "?")
        scope = f["scope"].iloc[0] if "scope" in f.columns else r.meta.get("scope", "?")
        how = "ranked within each layer" if scope == "layer" else "ranked over the model"
        parts.append(H.heading(f"{r.name} ({method}, {how})"))
        parts.append(_meta_line(r, ("method", "scope", "prompts", "classes")))
        parts.append(H.image(figures.ranking_png(f, r.name, TOP_FRACTION),
                             f"score by layer, ranking {r.name}"))
        sec.figures += 1
        top = top_neurons(f, TOP_TABLE)
        parts.append(H.para(f"Top {len(top)} of {len(f)} neurons by score over all layers "
                            f"(rank: within the {'layer' if scope == 'layer' else 'model'})."))
        parts.append(H.table(top, formats={"accuracy": acc, "score": score}))
    sec.body = "".join(parts)
    n = len(c.tables("rankings"))
    sec.summary = f"{n} ranking{'s' * (n != 1)}"
    return sec


# -- 2. top examples: neurondb.report.examples ---------------------------------------------
# -- 3. correlations, overlaps, masks ----------------------------------------------------------
def correlations(c: StoreContents) -> Section:
    """Heatmaps of the mean (over layers) Spearman rho and top-k overlap between rankings."""
    sec = Section("correlations", "Ranking correlations", note=HINTS["correlations"])
    parts = []
    for r in c.tables("correlations"):
        rho, ov = correlation_matrices(r.frame)
        parts.append(H.heading(r.name))
        parts.append(_meta_line(r))
        parts.append(H.para("Mean over layers of Spearman's rho between the rankings' scores "
                            "and of the overlap of their per-layer top k.", "meta"))
        parts.append(H.image(figures.heatmap_png(
            [("Spearman rho", rho), ("top-k overlap", ov)],
            vmin=-1.0, vmax=1.0), f"correlation heatmap {r.name}"))
        sec.figures += 1
        pairs = (r.frame.groupby(["a", "b"], sort=False)
                 .agg(layers=("layer", "size"), spearman=("spearman", "mean"),
                      spearman_min=("spearman", "min"), spearman_max=("spearman", "max"),
                      topk_overlap=("topk_overlap", "mean")).reset_index())
        order = {n: i for i, n in enumerate(rho.index)}
        pairs = pairs[pairs["a"].map(order) < pairs["b"].map(order)]
        parts.append(H.table(pairs, formats={c: score for c in pairs.columns[3:]}, headers={"spearman": "Spearman (mean)",
                                             "spearman_min": "min over layers",
                                             "spearman_max": "max over layers",
                                             "topk_overlap": "top-k overlap (mean)"}))
    sec.body = "".join(parts)
    sec.summary = f"{len(c.tables('correlations'))} comparison(s)"
    return sec


def overlaps(c: StoreContents) -> Section:
    """Heatmaps of the activated-neuron overlap (ON) between runs, per layer group."""
    sec = Section("overlaps", "Activated-neuron overlap (ON)", note=HINTS["overlaps"])
    parts = []
    for r in c.tables("overlaps"):
        parts.append(H.heading(r.name) + _meta_line(r))
        panels = [(f"layers {g}", m) for g, m in overlap_matrices(r.frame)]
        parts.append(H.image(figures.heatmap_png(panels, vmin=0.0, vmax=1.0),
                             f"activated-neuron overlap {r.name}"))
        sec.figures += 1
    sec.body = "".join(parts)
    sec.summary = f"{len(c.tables('overlaps'))} overlap result(s)"
    return sec


def masks(c: StoreContents) -> Section:
    """The masks in the store and how their neurons spread over the layers."""
    sec = Section("masks", "Masks", note=HINTS["masks"])
    ms = c.tables("masks")
    if not ms:
        return sec
    rows = [{"mask": r.name, "ranking": r.meta.get("ranking"), "method": r.meta.get("method"),
             "fraction": r.meta.get("fraction"), "scope": r.meta.get("scope"),
             "neurons": len(r.frame)} for r in ms]
    sec.body = (H.table(pd.DataFrame(rows), formats={"fraction": pct})
                + H.image(figures.masks_png([(r.name, r.frame) for r in ms]),
                          "neurons per layer of each mask"))
    sec.figures = 1
    sec.summary = f"{len(ms)} mask(s)"
    return sec


# -- 4. transfer -------------------------------------------------------------------------------
def transfers(c: StoreContents) -> Section:
    """The prompt-transfer heatmap and its table (mean over seeds)."""
    sec = Section("transfers", "Prompt transfer", note=HINTS["transfers"])
    parts = []
    for r in c.tables("transfers"):
        parts.append(H.heading(r.name) + _meta_line(r))
        parts.append(H.image(figures.transfer_png(r.frame), f"transfer heatmap {r.name}"))
        sec.figures += 1
        parts.append(H.table(transfer_summary(r.frame),
                             formats={"accuracy": acc, "relative": lambda v: pct(float(v) / 100)
                                      if v is not None and np.isfinite(float(v)) else "—"},
                             headers={"relative": "relative (%)", "seeds": "prompts"}))
    sec.body = "".join(parts)
    sec.summary = f"{len(c.tables('transfers'))} transfer table(s)"
    return sec


# -- 5. suppression ----------------------------------------------------------------------------
def _suppression_params(r: ResultTable) -> str:
    f = r.frame
    bits = []
    for col in ("data", "split", "mode"):
        if col in f.columns:
            vals = ", ".join(map(str, dict.fromkeys(f[col].dropna().astype(str))))
            if vals:
                bits.append(f"{col}: {vals}")
    if "n" in f.columns and len(f):
        bits.append(f"examples: {int(f['n'].max())}")
    p = r.meta
    if not p and "params" in f.columns:
        try:
            p = json.loads(f["params"].iloc[0])
        except (TypeError, ValueError):
            p = {}
    for key in ("ranking", "mask", "model"):
        if isinstance(p, dict) and p.get(key):
            bits.append(f"{key}: {p[key]}")
    return "; ".join(bits)


def suppression(c: StoreContents) -> Section:
    """Accuracy against the suppressed fraction: selected neurons against random ones."""
    sec = Section("suppression", "Suppression curves", note=HINTS["suppression"])
    parts = []
    for r in c.tables("suppression"):
        parts.append(H.heading(r.name))
        line = _suppression_params(r)
        if line:
            parts.append(H.para(line, "meta"))
        parts.append(H.image(figures.suppression_png(r.frame, r.name),
                             f"suppression curves {r.name}"))
        sec.figures += 1
        s = suppression_summary(r.frame)
        s["drop"] = s["baseline"] - s["selected"]
        s["vs_random"] = s["selected"] - s["random_mean"]
        from neurondb.findings import suppression_rate_verdict

        s["verdict"] = [suppression_rate_verdict(row) if row["rate"] > 0 else "—"
                        for row in s.to_dict("records")]
        if s["mode"].nunique() <= 1:
            s = s.drop(columns="mode")
        parts.append(H.table(s, formats={"rate": lambda v: pct(v, 2), "baseline": acc,
                                         "selected": acc, "random_mean": acc, "random_std": acc,
                                         "random_min": acc, "random_max": acc, "drop": acc,
                                         "vs_random": acc},
                             headers={"rate": "suppressed", "selected": "selected accuracy",
                                      "random_mean": "random mean", "random_std": "random std",
                                      "random_min": "random min", "random_max": "random max",
                                      "seeds": "random seeds", "n_neurons": "neurons",
                                      "drop": "drop vs none", "vs_random": "selected − random",
                                      "verdict": "skill below every random draw?"}))
    sec.body = "".join(parts)
    sec.summary = f"{len(c.tables('suppression'))} suppression result(s)"
    return sec


# -- 6. pruning --------------------------------------------------------------------------------
def _mb(v: object) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    return f"{float(v) / 1e6:.1f} MB"  # type: ignore[arg-type]


def _pruning_notes(c: StoreContents, search: ResultTable | None, cmp_: pd.DataFrame) -> str:
    """Why the parameters fell by less than the neurons (the FFN's share of the model) and
    what the latency was measured under (threads, load average)."""
    from neurondb.report.params import parameter_breakdown

    parts = []
    full, pruned = cmp_[cmp_["model"] == "full"], cmp_[cmp_["model"] != "full"]
    if search is not None and "n_removed" in search.frame.columns and len(full) and len(pruned):
        chosen = search.frame[search.frame["chosen"].astype(bool)]
        if len(chosen):
            b = parameter_breakdown(int(full["parameters"].iloc[0]),
                                    int(pruned["parameters"].iloc[0]),
                                    int(chosen["n_removed"].iloc[0]), c.store.n_neurons)
            if b is not None:
                parts.append(H.para(b.text(), "meta"))
    ctx = c.latency_context
    if ctx:
        load = " / ".join(f"{float(x):.2f}" for x in ctx.get("load_average", []))
        parts.append(H.para(f"Latency measured with {ctx.get('threads')} torch thread(s) on "
                            f"{ctx.get('cores')} CPU core(s), load average {load} (1 / 5 / 15 "
                            "min) when it was taken; other work on the machine slows both "
                            "models.", "meta"))
    else:
        parts.append(H.para("The threads and load average the latency was measured under "
                            "were not recorded (`neurondb demo` records them).", "note"))
    return "".join(parts)


def pruning(c: StoreContents) -> Section:
    """The ratio search (accuracy against the pruned fraction, margin, chosen ratio) and the
    full-vs-pruned evaluation (accuracy, latency, speed-up, parameters)."""
    sec = Section("pruning", "Pruning", note=HINTS["pruning"])
    parts = []
    for p in c.pruning:
        parts.append(H.heading(p.name))
        if p.search is not None:
            f = p.search.frame
            margin = search_margin(p.search.meta, f)
            chosen = f[f["chosen"].astype(bool)]
            line = (f"unpruned accuracy {acc(f['baseline_accuracy'].iloc[0])}; "
                    + (f"margin {margin:g}; " if margin is not None else "margin not recorded; ")
                    + (f"chosen ratio {pct(chosen['ratio'].iloc[0])} (accuracy "
                       f"{acc(chosen['accuracy'].iloc[0])})" if len(chosen) else "no ratio chosen")
                    + f"; {len(f)} evaluations")
            parts.append(H.para(line, "meta"))
            parts.append(H.image(figures.pruning_png(f, margin, p.name),
                                 f"pruning ratio search {p.name}"))
            sec.figures += 1
            cols = [x for x in ("step", "ratio", "accuracy", "n", "baseline_accuracy",
                                "within_margin", "chosen") if x in f.columns]
            parts.append(H.table(f.sort_values("step"), cols,
                                 formats={"ratio": pct, "accuracy": acc,
                                          "baseline_accuracy": acc},
                                 headers={"ratio": "pruned", "baseline_accuracy": "unpruned"}))
        if p.evaluation is not None:
            cmp_ = pruned_comparison(p.evaluation.frame)
            parts.append(H.para("Full against pruned model (latency measured on the same "
                                "inputs; speed-up = full latency / pruned latency).", "meta"))
            parts.append(H.table(cmp_, formats={
                "ratio": pct, "accuracy": acc, "latency_ms": lambda v: f"{float(v):.1f}",
                "speed_up": times, "parameter_reduction": pct, "file_bytes": _mb,
                "parameters": count},
                headers={"batch_size": "batch size", "ratio": "pruned", "latency_ms": "latency (ms)",
                         "speed_up": "speed-up", "parameter_reduction": "parameters removed",
                         "file_bytes": "file size"}))
            parts.append(_pruning_notes(c, p.search, cmp_))
        else:
            parts.append(H.para("No full-vs-pruned evaluation under this name; make one with "
                                "`neurondb prune --search` (or --evaluate).", "note"))
    sec.body = "".join(parts)
    sec.summary = f"{len(c.pruning)} pruning result(s)"
    return sec


# -- 7. prompt tuning --------------------------------------------------------------------------
def prompts(c: StoreContents) -> Section:
    """Training curves of the tuned prompts and each seed's best validation accuracy."""
    sec = Section("prompts", "Prompt tuning", note=HINTS["prompts"])
    if c.prompts is None:
        return sec
    seeds = c.prompts
    parts = []
    if any(s.records for s in seeds):
        parts.append(H.image(figures.tuning_png(seeds), "prompt tuning curves"))
        sec.figures = 1
    rows = [{"seed": s.seed, "data": s.data, "model": s.model, "epochs": len(s.records),
             "best epoch": s.best_epoch, "best validation accuracy": s.best_eval_accuracy,
             "directory": str(s.path)} for s in seeds]
    parts.append(H.table(pd.DataFrame(rows), formats={"best validation accuracy": acc},
                         text_columns=["directory"]))
    accs = [s.best_eval_accuracy for s in seeds if s.best_eval_accuracy is not None]
    if accs:
        parts.append(H.para(f"Best validation accuracy over {len(accs)} seed(s): mean "
                            f"{np.mean(accs):.3f}, min {min(accs):.3f}, max {max(accs):.3f}.",
                            "meta"))
    sec.body = "".join(parts)
    sec.summary = f"{len(seeds)} seed(s)"
    return sec


def problems(c: StoreContents) -> Section:
    """Result files that could not be shown, one per line."""
    sec = Section("problems", "Left out", note="")
    if c.problems:
        sec.body = "<ul class=\"problems\">" + "".join(
            f"<li>{H.esc(p)}</li>" for p in c.problems) + "</ul>\n"
        sec.summary = f"{len(c.problems)} problem(s)"
    return sec


def build(c: StoreContents, store: Store) -> list[Section]:
    """Every section in page order (absent ones carry their note)."""
    from neurondb.report.examples import top_examples_section
    from neurondb.report.findings_section import condensation_section, findings_section

    steps: list[Callable[[], Section]] = [
        lambda: findings_section(c), lambda: rankings(c),
        lambda: top_examples_section(c, store), lambda: correlations(c),
        lambda: overlaps(c), lambda: masks(c), lambda: transfers(c), lambda: suppression(c),
        lambda: pruning(c), lambda: condensation_section(c), lambda: prompts(c)]
    out = [s() for s in steps]
    from neurondb.report.profiles import profiles_section

    prof = profiles_section(store)
    if prof.present:  # only in a store with profile runs
        out.insert(2, prof)
    p = problems(c)
    if p.present:
        out.append(p)
    return out
