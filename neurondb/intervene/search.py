"""Ratio search and pruned-model evaluation (SPEC §6).

Ratio search: keep the top ``1 - r`` of a ranking; find the largest ``r`` on a grid (0.05
steps by default) whose validation accuracy is within ``margin`` of the unpruned model's, by
binary search over the grid (about five evaluations for 19 grid points), reporting every
evaluation. A ratio is scored by zeroing its neurons (or replacing them by their means with
mean compensation), which equals the pruned model's output (SPEC §6 exactness, tested per
family), so the search needs no export per step.

Pruned evaluation: the chosen model is exported, loaded back, and scored on the same split;
latency is measured on the very same inputs for the full and the pruned model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.errors import arg, given
from neurondb.intervene.errors import NoAcceptableRatioError, PruneError
from neurondb.intervene.mask import LayerKey, NeuronMask
from neurondb.intervene.replace import replace_neurons
from neurondb.intervene.scoring import Scorer
from neurondb.intervene.selection import mask_from_ranking, priority_from_ranking

SEARCH_COLUMNS = ["step", "ratio", "accuracy", "n", "baseline_accuracy", "within_margin",
                  "chosen", "n_removed"]
EVAL_COLUMNS = ["model", "ratio", "accuracy", "n", "latency_ms", "batch_size", "parameters",
                "file_bytes"]


def ratio_grid(step: float = 0.05) -> list[float]:
    """``step, 2·step, ...`` below 1 (rounded to 6 decimals): 0.05 … 0.95 by default."""
    if not (0.0 < step < 0.5) or math.isnan(step):
        raise PruneError(f"{given('grid', step)} must lie in (0, 0.5), e.g. 0.05")
    n = int(math.floor((1.0 - 1e-9) / step))
    return [round(step * k, 6) for k in range(1, n + 1) if step * k < 1.0]


def check_margin(margin: float) -> float:
    """The accepted accuracy drop must lie in [0, 1)."""
    if not (0.0 <= margin < 1.0) or math.isnan(margin):
        raise PruneError(f"{given('margin', margin)} must lie in [0, 1): it is an accuracy "
                         "difference, e.g. 0.01")
    return float(margin)


@dataclass
class SearchResult:
    """Every evaluation of the search (``table``, columns :data:`SEARCH_COLUMNS`, step 0 =
    unpruned), the chosen ratio (None when even the smallest grid ratio falls outside the
    margin) and its mask."""

    table: pd.DataFrame
    chosen_ratio: float | None
    baseline_accuracy: float
    margin: float
    mask: NeuronMask | None = None
    masks: dict[float, NeuronMask] = field(default_factory=dict)


def pruning_mask(ranking: pd.DataFrame, ratio: float, scorer: Scorer,
                 meta: dict | None = None) -> NeuronMask:
    """The neurons pruning at ``ratio`` removes, with the keep-one rule applied (a layer the
    ratio would empty keeps its best-ranked neuron), exactly as the export will. Such layers
    are listed in ``meta['kept_one']`` as ``[stack, layer, neuron]``."""
    shape = scorer.shape()
    mask = mask_from_ranking(ranking, ratio, shape, meta=meta)
    eff, kept = mask.ensure_nonempty(shape, priority_from_ranking(ranking))
    if kept:
        eff.meta["kept_one"] = [list(k) for k in kept]
    return eff


def score_pruned_by_zeroing(scorer: Scorer, mask: NeuronMask,
                            means: Mapping[LayerKey, np.ndarray] | None = None) -> float:
    """Accuracy of the model with ``mask`` removed: zeroed (or mean-replaced when ``means``
    is given, which equals mean-compensated pruning)."""
    mode = "mean" if means is not None else "zero"
    with replace_neurons(scorer.lm.model, mask, mode, means=means):
        return scorer.evaluate().accuracy


def search_ratio(scorer: Scorer, ranking: pd.DataFrame, *, margin: float = 0.01,
                 grid_step: float = 0.05,
                 means: Mapping[LayerKey, np.ndarray] | None = None,
                 meta: dict | None = None,
                 log: Callable[[int, float, float, bool], None] | None = None) -> SearchResult:
    """Binary search for the largest grid ratio within ``margin`` of the unpruned accuracy.

    Accuracy is assumed to fall (weakly) with the ratio, as the search in SPEC §6 does; every
    evaluation made is in the table, so a non-monotone curve is visible there. ``log(step,
    ratio, accuracy, accepted)`` is called after each evaluation (step 0: unpruned).
    """
    check_margin(margin)
    grid = ratio_grid(grid_step)
    base = scorer.evaluate()
    rows = [{"step": 0, "ratio": 0.0, "accuracy": base.accuracy, "n": base.n,
             "within_margin": True, "n_removed": 0}]
    if log:
        log(0, 0.0, base.accuracy, True)
    masks: dict[float, NeuronMask] = {}
    lo, hi = -1, len(grid)  # grid[lo] accepted (-1: only ratio 0), grid[hi] rejected
    step = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r = grid[mid]
        mask = pruning_mask(ranking, r, scorer, meta)
        masks[r] = mask
        acc = score_pruned_by_zeroing(scorer, mask, means)
        ok = acc >= base.accuracy - margin - 1e-12
        step += 1
        rows.append({"step": step, "ratio": r, "accuracy": acc, "n": base.n,
                     "within_margin": bool(ok), "n_removed": len(mask)})
        if log:
            log(step, r, acc, bool(ok))
        if ok:
            lo = mid
        else:
            hi = mid
    chosen = grid[lo] if lo >= 0 else None
    table = pd.DataFrame(rows)
    table["baseline_accuracy"] = base.accuracy
    table["chosen"] = table["ratio"] == chosen if chosen is not None else False
    return SearchResult(table=table[SEARCH_COLUMNS], chosen_ratio=chosen,
                        baseline_accuracy=base.accuracy, margin=margin,
                        mask=masks.get(chosen) if chosen is not None else None, masks=masks)


def evaluate_export(scorer: Scorer, export_dir: str | Path, ratio: float,
                    batch_sizes: Sequence[int] = (1, 32), repeats: int = 5,
                    say: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Load the export back, score it on the scorer's split, and time full vs pruned on the
    same inputs. Rows (columns :data:`EVAL_COLUMNS`): one per model and batch size; accuracy
    is the same on every row of a model. ``say`` gets a line before each step."""
    say = say or (lambda _msg: None)
    from neurondb.intervene.export import safetensors_bytes
    from neurondb.intervene.prune import parameter_count
    from neurondb.runtime.pruned import load_pruned

    say(f"loading the export {export_dir} back")
    pruned = load_pruned(export_dir, model_class=type(scorer.lm.model))
    pscorer = scorer.with_model(pruned)
    say(f"scoring the full and the pruned model on {len(scorer.data)} examples")
    full_acc = scorer.evaluate()
    pruned_acc = pscorer.evaluate()
    src = Path(getattr(scorer.lm.model.config, "_name_or_path", "") or "")
    full_bytes = safetensors_bytes(src) if src.is_dir() else 0
    rows = []
    for bs in batch_sizes:
        say(f"timing full and pruned at batch size {bs} ({repeats} interleaved repeats)")
        # interleave the timings so that machine noise hits both alike
        t_full, t_pruned = [], []
        for _ in range(repeats):
            t_full.append(scorer.latency_ms(bs, repeats=1))
            t_pruned.append(pscorer.latency_ms(bs, repeats=1))
        for name, sc, ev, t, nbytes in (
                ("full", scorer, full_acc, t_full, full_bytes),
                ("pruned", pscorer, pruned_acc, t_pruned, safetensors_bytes(export_dir))):
            rows.append({"model": name, "ratio": 0.0 if name == "full" else ratio,
                         "accuracy": ev.accuracy, "n": ev.n,
                         "latency_ms": float(np.median(t)), "batch_size": int(bs),
                         "parameters": parameter_count(sc.lm.model), "file_bytes": int(nbytes)})
    return pd.DataFrame(rows, columns=EVAL_COLUMNS)


def speedups(table: pd.DataFrame) -> dict[int, float]:
    """``{batch size: full latency / pruned latency}`` from an :func:`evaluate_export` table."""
    out = {}
    for bs, g in table.groupby("batch_size"):
        full = g[g["model"] == "full"]["latency_ms"]
        pr = g[g["model"] == "pruned"]["latency_ms"]
        if len(full) and len(pr):
            out[int(bs)] = float(full.iloc[0] / pr.iloc[0])
    return out


@dataclass
class PruneSearchOutcome:
    """What ``neurondb prune --search`` did: the search, the export, its evaluation, and the
    result files written to the store (None where not written)."""

    search: SearchResult
    export: object  # neurondb.intervene.export.ExportReport
    evaluation: pd.DataFrame
    search_path: Path | None
    eval_path: Path | None
    png: Path | None
    prompt_dir: Path | None


def export_prompt(prompt, export_dir: str | Path, model) -> Path:
    """Copy a soft prompt (and head) into ``EXPORT/prompt`` re-keyed to the pruned ``model``
    (its fingerprint and path), so that ``neurondb extract|tune|suppress EXPORT --prompt
    EXPORT/prompt`` accept it; the full model's fingerprint is kept as ``pruned_from``."""
    from neurondb.store.manifest import model_fingerprint

    export_dir = Path(export_dir)
    meta = dict(prompt.meta)
    meta["pruned_from"] = {"model": meta.get("model"),
                           "model_fingerprint": meta.get("model_fingerprint"),
                           "prompt": str(prompt.source)}
    meta.update(model=str(export_dir), model_path=str(export_dir),
                model_fingerprint=model_fingerprint(model))
    prompt.meta = meta
    return prompt.save(export_dir / "prompt")


def prune_with_search(scorer: Scorer, ranking: pd.DataFrame, out: str | Path, *,
                      margin: float = 0.01, grid_step: float = 0.05, fmt: str = "compact",
                      means: Mapping[LayerKey, np.ndarray] | None = None,
                      store=None, name: str = "prune", provenance: dict | None = None,
                      batch_sizes: Sequence[int] = (1, 32), overwrite: bool = False,
                      log: Callable[[int, float, float, bool], None] | None = None,
                      say: Callable[[str], None] | None = None) -> PruneSearchOutcome:
    """Search the ratio, export the chosen pruning to ``out`` (with the prompt), load it back
    and evaluate it; write ``pruning/<name>`` and ``pruned_eval/<name>`` (+ a PNG) to
    ``store`` when given. Raises :class:`NoAcceptableRatioError` (a :class:`PruneError`, after
    writing the search table) when no grid ratio stays within the margin. ``say`` gets a line
    before each step after the search (export, reload, scoring, timing)."""
    from neurondb.intervene.export import export_pruned
    from neurondb.intervene.plots import plot_search
    from neurondb.query.results import check_absent, write_result
    from neurondb.runtime.pruned import load_pruned

    if store is not None:
        check_absent(store, "pruning", name, overwrite)
        check_absent(store, "pruned_eval", name, overwrite)
    meta = dict(provenance or {})
    res = search_ratio(scorer, ranking, margin=margin, grid_step=grid_step, means=means,
                       meta=meta, log=log)
    rmeta = {**meta, "margin": margin, "grid": grid_step, "chosen_ratio": res.chosen_ratio,
             "mean_compensation": means is not None, "data": scorer.data.name,
             "split": scorer.data.split}
    search_path = png = None
    if store is not None:
        search_path = write_result(store, "pruning", name, res.table, rmeta, overwrite=True)
        png = plot_search(res.table, search_path.with_suffix(".png"), margin)
    if res.chosen_ratio is None:
        tried = res.table[res.table["step"] > 0].sort_values("ratio")
        got = (f" (the smallest tried, ratio {tried['ratio'].iloc[0]:g}, gave "
               f"{tried['accuracy'].iloc[0]:.4f})" if len(tried) else "")
        raise NoAcceptableRatioError(
            f"no ratio on the {grid_step:g} grid keeps accuracy within {margin:g} of the "
            f"unpruned {res.baseline_accuracy:.4f}{got}; raise {arg('margin')} or use another "
            "ranking")
    assert res.mask is not None
    if say:
        say(f"exporting the model pruned at ratio {res.chosen_ratio:g} to {out}")
    report = export_pruned(scorer.lm.model, scorer.lm.tokenizer, res.mask, out, format=fmt,
                           means=means, priority=priority_from_ranking(ranking),
                           provenance={**rmeta, "search": res.table.to_dict("records")},
                           overwrite=overwrite)
    prompt_dir = None
    if scorer.prompt is not None:
        loaded = load_pruned(out, model_class=type(scorer.lm.model))
        import copy

        prompt_dir = export_prompt(copy.deepcopy(scorer.prompt), out, loaded)
        del loaded
    ev = evaluate_export(scorer, out, res.chosen_ratio, batch_sizes, say=say)
    eval_path = None
    if store is not None:
        eval_path = write_result(store, "pruned_eval", name, ev,
                                 {**rmeta, "export": str(report.out_dir),
                                  "speedup": speedups(ev)}, overwrite=True)
    return PruneSearchOutcome(search=res, export=report, evaluation=ev, search_path=search_path,
                              eval_path=eval_path, png=png, prompt_dir=prompt_dir)
