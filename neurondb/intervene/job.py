"""``neurondb prune`` as a typed request: every flag check in one place, then one of three
jobs — export by a mask or a ranking and ratio; the same plus evaluation of the export
(``evaluate``); or the ratio search, export and evaluation (``search``)."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from neurondb.errors import arg, given, on_cli, switch, together
from neurondb.intervene.errors import PruneError
from neurondb.intervene.export import ExportReport, check_export_dir, export_pruned
from neurondb.intervene.mask import NeuronMask
from neurondb.intervene.prune import FORMATS, means_from_stats
from neurondb.intervene.search import (
    PruneSearchOutcome,
    check_margin,
    evaluate_export,
    export_prompt,
    prune_with_search,
    ratio_grid,
)
from neurondb.intervene.selection import (
    check_ratio,
    mask_from_ranking,
    priority_from_ranking,
    read_ranking,
)
from neurondb.runtime.pruned import load_pruned


@dataclass
class PruneRequest:
    """The fields of ``neurondb prune``. Exactly one selection: ``mask`` (a file), or
    ``store`` + ``ranking`` + ``ratio``, or ``store`` + ``ranking`` + ``search``.
    ``data`` (+ ``prompt``) is needed to score: ``search`` or ``evaluate``."""

    model: str
    out: Path
    mask: Path | None = None
    store: Path | None = None
    ranking: str | None = None
    ratio: float | None = None
    fmt: str = "compact"
    mean_compensation: bool = False
    means_run: str | None = None
    overwrite: bool = False
    search: bool = False
    margin: float = 0.01
    grid: float = 0.05
    evaluate: bool = False
    data: str | None = None
    split: str = "validation"
    prompt: Path | None = None
    max_examples: int | None = None
    batch_size: int = 32
    latency_batch: tuple[int, ...] = (1, 32)
    name: str | None = None
    device: str = "auto"
    allow_foreign: bool = False

    @property
    def scored(self) -> bool:
        return self.search or self.evaluate

    def check(self) -> None:
        """One-line errors for every inconsistent combination, before anything is loaded."""
        if self.fmt not in FORMATS:
            raise PruneError(f"{arg('fmt', '--format')} must be compact or zeroed, not "
                             f"{self.fmt!r}")
        if self.search:
            if self.mask is not None or self.ratio is not None:
                raise PruneError(f"{switch('search')} chooses the ratio itself: give "
                                 f"{together(given('store', 'STORE'), given('ranking', 'NAME'))}"
                                 f", without {arg('mask')} or {arg('ratio')}")
            if self.store is None or self.ranking is None:
                raise PruneError(f"{switch('search')} needs "
                                 f"{together(given('store', 'STORE'), given('ranking', 'NAME'))}")
            check_margin(self.margin)
            ratio_grid(self.grid)
        else:
            if (self.mask is None) == (self.ranking is None):
                raise PruneError(f"give either {given('mask', 'FILE')} or "
                                 + together(given('store', 'STORE'), given('ranking', 'NAME'),
                                            given('ratio', 'R'))
                                 + f" (or {switch('search')})")
            if self.ranking is not None and (self.store is None or self.ratio is None):
                raise PruneError(f"{arg('ranking')} needs {given('store', 'STORE')} and "
                                 f"{given('ratio', 'R')} (or {switch('search')})")
            if self.mask is not None and self.ratio is not None:
                raise PruneError(f"{arg('ratio')} applies to {arg('ranking')}; a "
                                 f"{arg('mask')} already lists the neurons")
        if self.ratio is not None:
            check_ratio(self.ratio)
        if self.scored and self.data is None:
            raise PruneError(f"{switch('search')} and {switch('evaluate')} score the model on "
                             f"labelled data: add {given('data', 'DATA')} (and "
                             f"{given('prompt', 'DIR')} when the model needs one)")
        if self.mean_compensation and self.store is None:
            raise PruneError(f"{switch('mean_compensation')} takes the neuron means from "
                             f"{given('store', 'STORE')}")
        if any(b < 1 for b in self.latency_batch) or not self.latency_batch:
            raise PruneError(f"{arg('latency_batch')} takes batch sizes of at least 1, e.g. "
                             + ("1,32" if on_cli() else "(1, 32)"))
        check_export_dir(self.out, self.overwrite, "out")


@dataclass
class PruneOutcome:
    """What a prune job wrote: the export report, and for scored jobs the evaluation
    (``neurondb.intervene.search.EVAL_COLUMNS``), the search and the store files."""

    export: ExportReport
    model_path: str
    evaluation: pd.DataFrame | None = None
    search: PruneSearchOutcome | None = None
    prompt_dir: Path | None = None
    written: list[Path] = field(default_factory=list)


def _means(req: PruneRequest, store):
    if not req.mean_compensation:
        return None
    return means_from_stats(store.stats(run=req.means_run,
                                        split=None if req.means_run else "train"))


def _selection(req: PruneRequest, df: pd.DataFrame | None, shape):
    if req.mask is not None:
        return NeuronMask.from_file(req.mask), None, {"mask_file": str(req.mask)}
    sel = mask_from_ranking(df, req.ratio, shape, meta={"store": str(req.store),
                                                        "ranking": req.ranking})
    return sel, priority_from_ranking(df), {"ratio": req.ratio}


def _check_provenance(req: PruneRequest, model, name: str) -> tuple[str, bool]:
    """Refuse a ranking, mask or means of another model than ``model`` (the manifest's or the
    mask's recorded fingerprint) unless ``req.allow_foreign``. Returns the model's fingerprint
    and whether results may be written into ``req.store`` (it is this model's store)."""
    from neurondb.intervene.provenance import (
        check_mask,
        check_store,
        model_id,
        result_store_ok,
    )

    used = model_id(model, name)
    if req.ranking is not None:
        check_store(req.store, used, f"ranking {req.ranking!r}", req.allow_foreign)
    if req.mean_compensation:
        what = f"means (running statistics of {req.means_run or 'the train split'})"
        check_store(req.store, used, what, req.allow_foreign)
    if req.mask is not None:
        check_mask(NeuronMask.from_file(req.mask).meta, used, str(req.mask), req.allow_foreign)
    own = req.store is not None and result_store_ok(req.store, used)
    return used.fingerprint, own


def run_prune(req: PruneRequest, log=None, say=None) -> PruneOutcome:
    """Run the job ``req`` asks for. ``log(step, ratio, accuracy, accepted)`` is called after
    every evaluation of a search; ``say(line)`` before each later step (export, reload,
    scoring, timing), so that no stretch of a long job is silent."""
    import neurondb

    req.check()
    needs_store = req.store is not None and (req.mean_compensation or req.search)
    store = neurondb.open_store(req.store) if needs_store else None
    df = read_ranking(req.store, req.ranking) if req.ranking is not None else None
    means = _means(req, store)
    prov: dict = {"model": req.model, "format": req.fmt,
                  "store": None if req.store is None else str(req.store),
                  "ranking": req.ranking}
    if means is not None:
        prov["means"] = {"store": str(req.store), "run": req.means_run or "train split"}
    if not req.scored:
        return _plain(req, df, means, prov)

    from neurondb.intervene.scoring import check_full_model, prepare_scorer

    scorer = prepare_scorer(req.model, req.data, prompt=req.prompt, split=req.split,
                            max_examples=req.max_examples, batch_size=req.batch_size,
                            device=req.device)
    check_full_model(scorer.lm, "pruning by a mask or ranking of the full model")
    prov["model_fingerprint"], own_store = _check_provenance(req, scorer.lm.model, scorer.lm.name)
    prov["allow_foreign"] = req.allow_foreign
    prov["prompt"] = None if req.prompt is None else str(req.prompt)
    if req.search:
        name = req.name or f"prune_{req.ranking}"
        # results go only into a store of the model that computed them
        found = prune_with_search(scorer, df, req.out, margin=req.margin, grid_step=req.grid,
                                  fmt=req.fmt, means=means, store=store if own_store else None,
                                  name=name,
                                  provenance=prov, batch_sizes=req.latency_batch,
                                  overwrite=req.overwrite, log=log, say=say)
        written = [p for p in (found.search_path, found.eval_path, found.png) if p]
        return PruneOutcome(export=found.export, model_path=scorer.lm.name,
                            evaluation=found.evaluation, search=found,
                            prompt_dir=found.prompt_dir, written=written)
    sel, priority, extra = _selection(req, df, scorer.shape())
    if say:
        say(f"exporting the pruned model to {req.out}")
    report = export_pruned(scorer.lm.model, scorer.lm.tokenizer, sel, req.out, format=req.fmt,
                           means=means, priority=priority, provenance={**prov, **extra},
                           mask_file=req.mask, overwrite=req.overwrite)
    prompt_dir = None
    if scorer.prompt is not None:
        prompt_dir = export_prompt(copy.deepcopy(scorer.prompt), req.out,
                                   load_pruned(req.out, model_class=type(scorer.lm.model)))
    ev = evaluate_export(scorer, req.out, report.prune.ratio, req.latency_batch, say=say)
    return PruneOutcome(export=report, model_path=scorer.lm.name, evaluation=ev,
                        prompt_dir=prompt_dir)


def _plain(req: PruneRequest, df, means, prov: dict) -> PruneOutcome:
    """Export without scoring: the model as its config's architecture, pruned in place."""
    from transformers.utils import logging as hf_logging

    from neurondb.arch import adapter_for
    from neurondb.runtime.automap import load_model

    hf_logging.disable_progress_bar()
    try:
        net, tokenizer = load_model(req.model)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PruneError(f"cannot load model {req.model!r}: {first}") from e
    prov["model_fingerprint"], _ = _check_provenance(req, net, req.model)  # before pruning
    prov["allow_foreign"] = req.allow_foreign
    sel, priority, extra = _selection(req, df, adapter_for(net).shape(net))
    with warnings.catch_warnings():  # the keep-one rule is reported in the summary
        warnings.filterwarnings("ignore", message="the mask selects every neuron")
        report = export_pruned(net, tokenizer, sel, req.out, format=req.fmt, means=means,
                               priority=priority, provenance={**prov, **extra},
                               mask_file=req.mask, overwrite=req.overwrite, inplace=True)
    return PruneOutcome(export=report, model_path=req.model)
