"""Suppression evaluation (SPEC §5): accuracy with the top of a ranking replaced, against the
same number of random neurons per layer over several seeds, on the same examples.

One call makes a table with a row per evaluation::

    rate        fraction of the model's FFN neurons selected (0 for the baseline)
    selection   none (no suppression) | skill (top of the ranking) | random | mask (a file)
    seed        the random control's seed; -1 for the other rows
    accuracy    in [0, 1];  n  examples scored;  n_neurons  neurons replaced
    mode        zero | mean | noise;  data, split  what was scored

written to ``STORE/results/suppression/<name>.parquet`` when a store is given, with a PNG of
accuracy against rate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.intervene.errors import PruneError
from neurondb.intervene.mask import LayerKey, NeuronMask
from neurondb.intervene.replace import MODES, replace_neurons
from neurondb.intervene.scoring import Scorer, check_full_model, prepare_scorer
from neurondb.intervene.selection import check_ratio, read_ranking, top_from_ranking

DEFAULT_RATES = (0.01, 0.03, 0.05, 0.10, 0.15)
COLUMNS = ["rate", "selection", "seed", "accuracy", "n", "n_neurons", "mode", "data", "split"]


@dataclass
class Selection:
    """One suppressed set: ``rate`` (fraction of all FFN neurons), the mask, and its label
    (``skill`` or ``mask``)."""

    rate: float
    mask: NeuronMask
    selection: str


@dataclass
class SuppressResult:
    """``table`` (columns :data:`COLUMNS`), the Parquet it was written to (or None), the PNG."""

    table: pd.DataFrame
    path: Path | None
    png: Path | None
    note: str | None = None

    def summary(self) -> pd.DataFrame:
        """Per rate: see :func:`summarize_suppression`."""
        return summarize_suppression(self.table)


def summarize_suppression(table: pd.DataFrame) -> pd.DataFrame:
    """Per ``(mode, rate)`` of a suppression table: ``baseline`` (no suppression),
    ``selected`` (skill or mask accuracy), the random controls' ``random_mean``,
    ``random_std`` (ddof 0), ``random_min``, ``random_max`` over ``seeds`` seeds, and
    ``n_neurons`` suppressed."""
    d = table.copy()
    if "mode" not in d.columns:
        d["mode"] = "zero"
    rows = []
    for mode, g in d.groupby("mode", sort=False):
        base = g[g["selection"] == "none"]["accuracy"]
        baseline = float(base.mean()) if len(base) else np.nan
        sel = g[g["selection"].isin(["skill", "mask"])]
        rnd = g[g["selection"] == "random"]
        for rate in sorted(set(sel["rate"]) | set(rnd["rate"])):
            s = sel[sel["rate"] == rate]
            r = rnd[rnd["rate"] == rate]["accuracy"].to_numpy(np.float64)
            nn = s["n_neurons"] if "n_neurons" in s.columns and len(s) else (
                rnd[rnd["rate"] == rate]["n_neurons"] if "n_neurons" in rnd.columns else [])
            rows.append({"mode": mode, "rate": float(rate), "baseline": baseline,
                         "selected": float(s["accuracy"].mean()) if len(s) else np.nan,
                         "random_mean": float(r.mean()) if r.size else np.nan,
                         "random_std": float(r.std()) if r.size else np.nan,
                         "random_min": float(r.min()) if r.size else np.nan,
                         "random_max": float(r.max()) if r.size else np.nan,
                         "seeds": int(r.size),
                         "n_neurons": int(nn.iloc[0]) if len(nn) else None})
    return pd.DataFrame(rows)


def parse_rates(text: str | Sequence[float]) -> tuple[float, ...]:
    """Rates as fractions: ``"1,3,5"`` (percent, as the papers give them) or ``[0.01, ...]``.

    A comma list of numbers is read as percent when any is above 1, else as fractions.
    """
    if isinstance(text, str):
        try:
            vals = [float(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise PruneError(f"--rates takes a comma list of percents such as 1,3,5,10,15, not "
                             f"{text!r}") from None
        if any(v > 1 for v in vals):
            vals = [v / 100.0 for v in vals]
    else:
        vals = [float(v) for v in text]
    if not vals:
        raise PruneError("--rates is empty; give e.g. 1,3,5,10,15 (percent)")
    for v in vals:
        try:
            check_ratio(v)
        except PruneError:
            raise PruneError(f"rate {v:g} is outside (0, 1): rates are the percent of FFN "
                             "neurons to suppress, e.g. --rates 1,3,5,10,15") from None
    return tuple(sorted(set(vals)))


def suppression_table(scorer: Scorer, selections: Sequence[Selection], *, seeds: int = 3,
                      mode: str = "zero", means: dict[LayerKey, np.ndarray] | None = None,
                      sigma: float = 0.1, data_name: str = "", progress: bool = True
                      ) -> pd.DataFrame:
    """Score the unsuppressed model, then each selection and ``seeds`` random controls
    (``mask.random_like(seed)`` for seed 0..seeds-1: as many neurons per layer).

    Noise mode draws from seeded generators (the selection's and each control's seed), so the
    table is reproducible. Returns one row per evaluation (columns :data:`COLUMNS`).
    """
    if mode not in MODES:
        raise PruneError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if seeds < 0:
        raise PruneError("--seeds must be 0 or more")
    shape = scorer.shape()
    model = scorer.lm.model
    split = scorer.data.split
    jobs: list[tuple[float, str, int, NeuronMask | None]] = [(0.0, "none", -1, None)]
    for sel in selections:
        sel.mask.check_shape(shape)
        jobs.append((sel.rate, sel.selection, -1, sel.mask))
        for seed in range(seeds):
            jobs.append((sel.rate, "random", seed, sel.mask.random_like(seed, shape)))
    rows = []
    from neurondb.runtime.progress import CountProgress

    bar = CountProgress(progress)
    bar.start(f"suppress ({mode})", len(jobs))
    try:
        for rate, what, seed, mask in jobs:
            label = "no suppression" if mask is None else (
                f"{what} {100 * rate:g}%" + (f" seed {seed}" if seed >= 0 else ""))
            bar.step(label, 0)
            if mask is None:
                ev = scorer.evaluate()
            else:
                with replace_neurons(model, mask, mode, means=means, sigma=sigma,
                                     seed=max(seed, 0) * 1000):
                    ev = scorer.evaluate()
            rows.append({"rate": rate, "selection": what, "seed": seed,
                         "accuracy": ev.accuracy, "n": ev.n,
                         "n_neurons": 0 if mask is None else len(mask), "mode": mode,
                         "data": data_name, "split": split})
            bar.step("")
    finally:
        bar.close()
    return pd.DataFrame(rows, columns=COLUMNS)


def _default_name(ranking: str | None, mask: str | Path | None, data: str, split: str) -> str:
    what = ranking or Path(str(mask)).stem
    d = Path(data).name if Path(data).exists() else data
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", f"suppress_{what}_{d}_{split}")[:128]


def suppress(model: str | None, data: str, *, prompt: str | Path | None = None,
             split: str = "validation", store: str | Path | None = None,
             ranking: str | None = None, mask: str | Path | NeuronMask | None = None,
             rates: Sequence[float] | str = DEFAULT_RATES, mode: str = "zero", seeds: int = 3,
             sigma: float = 0.1, means_run: str | None = None, readout: str = "auto",
             template: str | None = None, verbalizer: list[str] | None = None,
             task: str | None = None, text_fields: list[str] | None = None,
             label_field: str = "label", max_examples: int | None = None, batch_size: int = 32,
             device: str = "auto", name: str | None = None, png: str | Path | None = None,
             overwrite: bool = False, progress: bool = True, allow_foreign: bool = False,
             results_store: str | Path | None = None) -> SuppressResult:
    """Suppression evaluation of MODEL on DATA (SPEC §5).

    Selections: the top ``rates`` of ``ranking`` in ``store`` (per layer or global, as the
    ranking is), or one ``mask`` (file or :class:`NeuronMask`). The ranking may come from
    another dataset than ``data`` (e.g. clean ranking, adversarial data). ``mode='mean'``
    takes the means from the store's running statistics (``means_run``, default the train
    split). Results go to ``STORE/results/suppression/<name>.parquet`` when ``store`` is given
    and, with ``png``, a plot of accuracy against rate.

    Provenance: the ranking's and the means' store, and a mask file's recorded store or
    fingerprint, must be of MODEL (the manifest's fingerprint); another model's is a
    :class:`~neurondb.errors.ProvenanceError` naming both, unless ``allow_foreign``. Results
    are written only into a store of MODEL: ``results_store`` when given (checked), else
    ``store`` when it is MODEL's; a foreign store (allowed) gets nothing and ``note`` says so.
    """
    from neurondb.errors import ProvenanceError
    from neurondb.intervene.provenance import (
        check_mask,
        check_store,
        model_id,
        result_store_ok,
        store_model,
    )
    from neurondb.query.results import check_absent, write_result
    from neurondb.store.reader import open_store

    if (mask is None) == (ranking is None):
        raise PruneError("give either --mask FILE or --store STORE --ranking NAME")
    if ranking is not None and store is None:
        raise PruneError("--ranking names a ranking in a store: add --store STORE")
    if mode not in MODES:
        raise PruneError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "mean" and store is None:
        raise PruneError("--mode mean replaces neurons by their training means, which come from "
                         "--store STORE (its running statistics)")
    if sigma <= 0 and mode == "noise":
        raise PruneError("--sigma must be positive")
    rate_list = parse_rates(rates) if ranking is not None else ()
    st = open_store(store) if store is not None else None
    out_path = results_store if results_store is not None else store
    out_st = (open_store(results_store) if results_store is not None else st)
    split_name = split
    res_name = name or _default_name(ranking, mask if not isinstance(mask, NeuronMask)
                                     else "mask", data, split_name)
    if out_st is not None:
        check_absent(out_st, "suppression", res_name, overwrite)
    df_rank = read_ranking(store, ranking) if ranking is not None else None
    sel_mask = (mask if isinstance(mask, NeuronMask)
                else NeuronMask.from_file(mask) if mask is not None else None)

    scorer = prepare_scorer(model, data, prompt=prompt, split=split, readout=readout,
                            template=template, verbalizer=verbalizer, task=task,
                            text_fields=text_fields, label_field=label_field,
                            max_examples=max_examples, batch_size=batch_size, device=device)
    check_full_model(scorer.lm, "suppression by a mask or ranking of the full model")
    used = model_id(scorer.lm.model, scorer.lm.name)
    if ranking is not None:
        check_store(store, used, f"ranking {ranking!r}", allow_foreign)
    if sel_mask is not None:
        check_mask(sel_mask.meta, used, str(mask) if not isinstance(mask, NeuronMask)
                   else "given", allow_foreign)
    if mode == "mean":
        check_store(store, used, f"means (running statistics of {means_run or 'the train split'})",
                    allow_foreign)
    note = None
    if out_st is not None and not result_store_ok(out_path, used):
        if results_store is not None:
            rec = store_model(results_store)
            raise ProvenanceError(f"--results-store {results_store} is a store of "
                                  f"{rec.describe() if rec else 'another model'}; results of "
                                  f"{used.describe()} go only into a store of that model")
        note = (f"not written to {store}: it holds another model's store (pass "
                "--results-store with a store of this model to keep the table)")
        out_st = None
        if png and Path(store).resolve() in Path(png).resolve().parents:
            png = None  # nor the plot
    shape = scorer.shape()
    total = shape.n_neurons()
    selections: list[Selection] = []
    if df_rank is not None:
        for r in rate_list:
            m = top_from_ranking(df_rank, r, shape, meta={"store": str(store),
                                                          "ranking": ranking})
            selections.append(Selection(rate=float(r), mask=m, selection="skill"))
    else:
        assert sel_mask is not None
        sel_mask.check_shape(shape)
        selections.append(Selection(rate=len(sel_mask) / total, mask=sel_mask,
                                    selection="mask"))
    means = None
    if mode == "mean":
        from neurondb.intervene.prune import means_from_stats

        means = means_from_stats(st.stats(run=means_run,
                                          split=None if means_run else "train"))
    table = suppression_table(scorer, selections, seeds=seeds, mode=mode, means=means,
                              sigma=sigma, data_name=str(data), progress=progress)
    path = None
    if out_st is not None:
        meta = {"model": scorer.lm.name, "model_fingerprint": used.fingerprint,
                "data": str(data), "split": split_name, "ranking_store": None if store is None
                else str(store), "allow_foreign": bool(allow_foreign),
                "prompt": None if scorer.prompt is None else str(scorer.prompt.source),
                "ranking": ranking, "mask": None if mask is None or isinstance(mask, NeuronMask)
                else str(mask), "mode": mode, "sigma": sigma if mode == "noise" else None,
                "seeds": seeds, "rates": list(rate_list), "n_neurons_total": total,
                "scope": selections[0].mask.meta.get("scope") if selections else None}
        path = write_result(out_st, "suppression", res_name, table, meta, overwrite=overwrite)
    png_path = None
    if png:
        from neurondb.intervene.plots import plot_suppression

        png_path = plot_suppression(table, png, title=f"suppression on {Path(str(data)).name}"
                                    f":{split_name} ({mode})")
    return SuppressResult(table=table, path=path, png=png_path, note=note)
