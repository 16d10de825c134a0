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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from neurondb.errors import arg, given, together
from neurondb.intervene.errors import PruneError
from neurondb.intervene.mask import LayerKey, NeuronMask
from neurondb.intervene.replace import MODES, replace_neurons
from neurondb.intervene.scoring import Scorer, check_full_model, prepare_scorer
from neurondb.intervene.selection import check_ratio, read_ranking, top_from_ranking
from neurondb.store.io import check_output_file

if TYPE_CHECKING:
    from neurondb.arch.shape import ModelShape
    from neurondb.intervene.provenance import ModelId
    from neurondb.store.reader import Store

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
            raise PruneError(f"{arg('rates')} takes a comma list of percents such as "
                             f"1,3,5,10,15, not {text!r}") from None
        if any(v > 1 for v in vals):
            vals = [v / 100.0 for v in vals]
    else:
        vals = [float(v) for v in text]
    if not vals:
        raise PruneError(f"{arg('rates')} is empty; give e.g. 1,3,5,10,15 (percent)")
    for v in vals:
        try:
            check_ratio(v)
        except PruneError:
            raise PruneError(f"rate {v:g} is outside (0, 1): rates are the percent of FFN "
                             f"neurons to suppress, e.g. {given('rates', '1,3,5,10,15')}") from None
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
        raise PruneError(f"{arg('mode')} must be one of {', '.join(MODES)}, not {mode!r}")
    if seeds < 0:
        raise PruneError(f"{arg('seeds')} must be 0 or more")
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


def _check_arguments(mask: str | Path | NeuronMask | None, ranking: str | None,
                     store: str | Path | None, mode: str, sigma: float) -> None:
    """Refuse inconsistent options before anything is loaded."""
    if (mask is None) == (ranking is None):
        raise PruneError(f"give either {given('mask', 'FILE')} or "
                         f"{together(given('store', 'STORE'), given('ranking', 'NAME'))}")
    if ranking is not None and store is None:
        raise PruneError(f"{arg('ranking')} names a ranking in a store: add "
                         f"{given('store', 'STORE')}")
    if mode not in MODES:
        raise PruneError(f"{arg('mode')} must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "mean" and store is None:
        raise PruneError(f"{given('mode', 'mean')} replaces neurons by their training means, "
                         f"which come from {given('store', 'STORE')} (its running statistics)")
    if sigma <= 0 and mode == "noise":
        raise PruneError(f"{arg('sigma')} must be positive")


def _given_mask(mask: str | Path | NeuronMask | None) -> NeuronMask | None:
    """The mask to suppress: as given, read from its file, or None (a ranking is used)."""
    return (mask if isinstance(mask, NeuronMask)
            else NeuronMask.from_file(mask) if mask is not None else None)


def _check_provenance(used: ModelId, *, store: str | Path | None, ranking: str | None,
                      mask: str | Path | NeuronMask | None, sel_mask: NeuronMask | None,
                      mode: str, means_run: str | None, allow_foreign: bool) -> None:
    """The ranking's store, the mask and the means' store must be of the model ``used``
    (a :class:`~neurondb.errors.ProvenanceError` otherwise, unless ``allow_foreign``)."""
    from neurondb.intervene.provenance import check_mask, check_store

    if ranking is not None:
        check_store(store, used, f"ranking {ranking!r}", allow_foreign)
    if sel_mask is not None:
        check_mask(sel_mask.meta, used, str(mask) if not isinstance(mask, NeuronMask)
                   else "given", allow_foreign)
    if mode == "mean":
        check_store(store, used, f"means (running statistics of {means_run or 'the train split'})",
                    allow_foreign)


def _results_target(out_st: Store | None, used: ModelId, store: str | Path | None,
                    results_store: str | Path | None, png: str | Path | None
                    ) -> tuple[Store | None, str | None, str | Path | None]:
    """Where the table may go: ``(store or None, note, png)``.

    A ``results_store`` of another model is refused; a ``store`` of another model (allowed as
    the ranking's source) gets nothing, nor a plot inside it, and the note says so.
    """
    from neurondb.errors import ProvenanceError
    from neurondb.intervene.provenance import result_store_ok, store_model

    out_path = results_store if results_store is not None else store
    if out_st is None or result_store_ok(out_path, used):
        return out_st, None, png
    if results_store is not None:
        rec = store_model(results_store)
        raise ProvenanceError(f"{given('results_store', str(results_store))} is a store of "
                              f"{rec.describe() if rec else 'another model'}; results of "
                              f"{used.describe()} go only into a store of that model")
    note = (f"not written to {store}: it holds another model's store (pass "
            f"{arg('results_store')} with a store of this model to keep the table)")
    if png and Path(store).resolve() in Path(png).resolve().parents:
        png = None  # nor the plot
    return None, note, png


def _selections(df_rank: pd.DataFrame | None, rate_list: Sequence[float], shape: ModelShape,
                total: int, sel_mask: NeuronMask | None, store: str | Path | None,
                ranking: str | None) -> list[Selection]:
    """The suppressed sets: the top ``rate`` of the ranking for each rate, else the mask
    (its rate: its size over the ``total`` FFN neurons)."""
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
    return selections


def _training_means(st: Store, means_run: str | None) -> dict[LayerKey, np.ndarray]:
    """Per layer, the ``[d_ff]`` mean activations of ``means_run`` (default the train split)."""
    from neurondb.intervene.prune import means_from_stats

    return means_from_stats(st.stats(run=means_run, split=None if means_run else "train"))


def _result_meta(scorer: Scorer, used: ModelId, selections: Sequence[Selection], *, data: str,
                 split: str, store: str | Path | None, ranking: str | None,
                 mask: str | Path | NeuronMask | None, mode: str, sigma: float, seeds: int,
                 rate_list: Sequence[float], total: int, allow_foreign: bool) -> dict:
    """The provenance written with the suppression table."""
    return {"model": scorer.lm.name, "model_fingerprint": used.fingerprint,
            "data": str(data), "split": split, "ranking_store": None if store is None
            else str(store), "allow_foreign": bool(allow_foreign),
            "prompt": None if scorer.prompt is None else str(scorer.prompt.source),
            "ranking": ranking, "mask": None if mask is None or isinstance(mask, NeuronMask)
            else str(mask), "mode": mode, "sigma": sigma if mode == "noise" else None,
            "seeds": seeds, "rates": list(rate_list), "n_neurons_total": total,
            "scope": selections[0].mask.meta.get("scope") if selections else None}


def _plot(table: pd.DataFrame, png: str | Path, data: str, split: str, mode: str) -> Path:
    """PNG of accuracy against rate (see :func:`neurondb.intervene.plots.plot_suppression`)."""
    from neurondb.intervene.plots import plot_suppression

    return plot_suppression(table, png, title=f"suppression on {Path(str(data)).name}"
                            f":{split} ({mode})")


@dataclass(frozen=True)
class SuppressRequest:
    """One suppression evaluation (SPEC §5); the CLI flags and the keyword arguments of
    :func:`suppress` map one to one onto these fields. ``model``: a name, a path or a loaded
    model (with ``tokenizer``); None: the one ``prompt`` was tuned on."""

    model: Any
    data: Any
    tokenizer: Any = None
    prompt: str | Path | None = None
    split: str = "validation"
    store: str | Path | None = None
    ranking: str | None = None
    mask: str | Path | NeuronMask | None = None
    rates: Sequence[float] | str = DEFAULT_RATES
    mode: str = "zero"
    seeds: int = 3
    sigma: float = 0.1
    means_run: str | None = None
    readout: str = "auto"
    template: str | None = None
    verbalizer: list[str] | None = None
    task: str | None = None
    text_fields: list[str] | None = None
    label_field: str = "label"
    max_examples: int | None = None
    batch_size: int = 32
    device: str = "auto"
    name: str | None = None
    png: str | Path | None = None
    overwrite: bool = False
    progress: bool = True
    allow_foreign: bool = False
    results_store: str | Path | None = None

    def __post_init__(self) -> None:
        _check_arguments(self.mask, self.ranking, self.store, self.mode, self.sigma)
        check_output_file(self.png, "png", "--png", "suppression.png", makes_parents=True)


def suppress(model, data, **kwargs) -> SuppressResult:
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
    Keyword arguments are the fields of :class:`SuppressRequest`.
    """
    return run_suppression(SuppressRequest(model=model, data=data, **kwargs))


def run_suppression(r: SuppressRequest) -> SuppressResult:
    """Carry out one :class:`SuppressRequest`."""
    from neurondb.intervene.provenance import model_id
    from neurondb.query.results import check_absent, write_result
    from neurondb.store.reader import open_store

    rate_list = parse_rates(r.rates) if r.ranking is not None else ()
    st = open_store(r.store) if r.store is not None else None
    out_st = (open_store(r.results_store) if r.results_store is not None else st)
    data_name = r.data if isinstance(r.data, (str, Path)) else "data"
    res_name = r.name or _default_name(r.ranking, r.mask if not isinstance(r.mask, NeuronMask)
                                       else "mask", str(data_name), r.split)
    if out_st is not None:
        check_absent(out_st, "suppression", res_name, r.overwrite)
    df_rank = read_ranking(r.store, r.ranking) if r.ranking is not None else None
    sel_mask = _given_mask(r.mask)

    scorer = prepare_scorer(r.model, r.data, prompt=r.prompt, split=r.split, readout=r.readout,
                            template=r.template, verbalizer=r.verbalizer, task=r.task,
                            text_fields=r.text_fields, label_field=r.label_field,
                            max_examples=r.max_examples, batch_size=r.batch_size,
                            device=r.device, tokenizer=r.tokenizer)
    check_full_model(scorer.lm, "suppression by a mask or ranking of the full model")
    used = model_id(scorer.lm.model, scorer.lm.name)
    _check_provenance(used, store=r.store, ranking=r.ranking, mask=r.mask, sel_mask=sel_mask,
                      mode=r.mode, means_run=r.means_run, allow_foreign=r.allow_foreign)
    out_st, note, png = _results_target(out_st, used, r.store, r.results_store, r.png)
    shape = scorer.shape()
    total = shape.n_neurons()
    selections = _selections(df_rank, rate_list, shape, total, sel_mask, r.store, r.ranking)
    means = _training_means(st, r.means_run) if r.mode == "mean" else None
    table = suppression_table(scorer, selections, seeds=r.seeds, mode=r.mode, means=means,
                              sigma=r.sigma, data_name=str(data_name), progress=r.progress)
    path = None
    if out_st is not None:
        meta = _result_meta(scorer, used, selections, data=str(data_name), split=r.split,
                            store=r.store, ranking=r.ranking, mask=r.mask, mode=r.mode,
                            sigma=r.sigma, seeds=r.seeds, rate_list=rate_list, total=total,
                            allow_foreign=r.allow_foreign)
        path = write_result(out_st, "suppression", res_name, table, meta, overwrite=r.overwrite)
    png_path = _plot(table, png, str(data_name), r.split, r.mode) if png else None
    return SuppressResult(table=table, path=path, png=png_path, note=note)
