"""Prompt transfer (Su et al. 2022; SPEC §7): every tuned prompt evaluated on every dataset.

Relative performance of source prompt S on target T:
``rel(S -> T) = acc(T | prompt S) / acc(T | prompt T) × 100``, where ``acc(T | prompt T)``
is the mean accuracy on T of the prompts (seeds) tuned on T among those given; a prompt is
"tuned on T" when its meta's data key (``neurondb.runtime.naming.data_key``) equals T's. Without
a prompt tuned on T the relative figure is NaN.

On a target the label is read as T's own prompt reads it (its template, verbalizer and text
fields, from the meta), else as T's task preset says, else as each source prompt says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.errors import arg, on_cli
from neurondb.runtime.data import LoadedData, load_data
from neurondb.runtime.evaluate import check_prompt, evaluate, readout_for
from neurondb.runtime.model import LoadedModel, model_for
from neurondb.runtime.naming import data_key, parse_data_spec
from neurondb.runtime.progress import CountProgress
from neurondb.runtime.prompt import PROMPT_JSON, SoftPrompt, load_prompt
from neurondb.runtime.templates import resolve_labels
from neurondb.store.io import check_output_file
from neurondb.tune.errors import TuneError

COLUMNS = ["prompt", "source", "seed", "target", "split", "n", "accuracy", "own_accuracy",
           "relative"]


def expand_prompt_dirs(paths: list[str | Path]) -> list[Path]:
    """Prompt directories: each path itself, or the ``seed-*`` directories under a
    ``neurondb tune --out`` directory, in seed order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and not (p / PROMPT_JSON).exists():
            subs = sorted((d for d in p.glob("seed-*") if (d / PROMPT_JSON).exists()),
                          key=lambda d: (len(d.name), d.name))
            if subs:
                out.extend(subs)
                continue
        out.append(p)
    if not out:
        raise TuneError("no prompts given; pass " + ("--prompts DIR[,DIR...]" if on_cli() else
                                                       "prompts=[DIR, ...]"))
    return out


def short_name(key: str) -> str:
    """A display name for a data key: a local directory's or file's name, else the key."""
    p = Path(key)
    return p.name if p.is_absolute() else key


def relative_performance(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``own_accuracy`` (mean accuracy on the target of the prompts whose ``source`` is
    that target) and ``relative`` (``accuracy / own_accuracy * 100``, NaN without one) to a
    frame with columns ``source``, ``target_key``, ``accuracy``."""
    df = df.copy()
    own = (df[df["source"] == df["target_key"]].groupby("target_key")["accuracy"].mean())
    df["own_accuracy"] = df["target_key"].map(own).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        df["relative"] = df["accuracy"] / df["own_accuracy"] * 100.0
    return df


@dataclass
class _Target:
    data: str
    split: str
    key: str
    template: str | None
    verbalizer: list[str] | None
    loaded: LoadedData


def _model_name(prompts: list[SoftPrompt], model: str | None) -> str:
    if model:
        return model
    names = {p.meta.get("model_path") if p.meta.get("model_path") and
             Path(p.meta["model_path"]).exists() else p.meta.get("model") for p in prompts}
    if len(names) != 1 or None in names:
        raise TuneError("the prompts do not name one model (tuned on "
                        f"{', '.join(sorted(map(str, names)))}); pass {arg('model')}")
    return str(names.pop())


def _target(data: str, split: str, own: list[SoftPrompt], text_fields, label_field,
            max_examples) -> _Target:
    meta = own[0].meta if own else {}
    spec = resolve_labels(data, prompt_meta=meta, default_template=None)
    dmeta = meta.get("data") or {}
    fields = text_fields or dmeta.get("text_fields")
    lf = dmeta.get("label_field") or label_field
    loaded = load_data(data, split, None, fields, lf, max_examples, spec.task)
    return _Target(data=data, split=split, key=data_key(data), template=spec.template,
                   verbalizer=spec.verbalizer, loaded=loaded)


def transfer(prompts: list[str | Path], datasets: list[tuple[str, str] | str],
             model: str | None = None, *, text_fields: list[str] | None = None,
             label_field: str = "label", max_examples: int | None = None, batch_size: int = 32,
             device: str = "auto", png: str | Path | None = None, csv: str | Path | None = None,
             progress: bool = True) -> pd.DataFrame:
    """Evaluate every prompt on every ``(data, split)``; one row per pair.

    Columns: ``prompt`` (directory), ``source`` (the data key it was tuned on), ``seed``,
    ``target`` (data as given), ``target_key``, ``split``, ``n`` (examples), ``accuracy`` in
    [0, 1], ``own_accuracy`` (``acc(T | prompt T)``), ``relative`` (percent). ``model``
    defaults to the one the prompts name. ``png``: a heatmap of the mean relative performance
    over seeds (accuracy where no prompt was tuned on the target); ``csv``: the table.
    """
    check_output_file(png, "png", "--png", "transfer.png", makes_parents=True)
    check_output_file(csv, "csv", "--csv", "transfer.csv")
    dirs = expand_prompt_dirs(list(prompts))
    sps = [load_prompt(d) for d in dirs]
    specs = [parse_data_spec(d) if isinstance(d, str) else (str(d[0]), str(d[1]))
             for d in datasets]
    if not specs:
        raise TuneError("no datasets given; pass " + (
            "--data DATA:split[,DATA:split...]" if on_cli() else
            "datasets=['DATA:split', ...] or [(DATA, split), ...]"))
    name = _model_name(sps, model)
    models: dict[str, LoadedModel] = {}
    lms = []
    for sp in sps:
        r = resolve_labels(None, prompt_meta=sp.meta, prompt_has_head=sp.has_head).readout
        if r not in models:  # one load per readout, shared by the prompts read through it
            models[r] = model_for(name, readout=r, device=device, has_head=sp.has_head)
        check_prompt(models[r], sp)
        lms.append(models[r])
    sources = [str((sp.meta.get("data") or {}).get("key") or Path(sp.source).name) for sp in sps]
    targets = []
    for data, split in specs:
        key = data_key(data)
        own = [sp for sp, s in zip(sps, sources) if s == key]
        targets.append(_target(data, split, own, text_fields, label_field, max_examples))
    rows = []
    bar = CountProgress(progress)
    bar.unit = "cells"  # plain progress lines: cells/s
    bar.start("transfer", len(sps) * len(targets))
    try:
        for sp, lm, src in zip(sps, lms, sources):
            for t in targets:
                bar.step(f"{short_name(src)} -> {short_name(t.key)}:{t.split}", 0)
                ro = readout_for(lm, sp, t.template, None if sp.has_head else t.verbalizer)
                ev = evaluate(lm, sp, t.loaded, readout=ro, batch_size=batch_size,
                              check_model=False)
                rows.append({"prompt": str(sp.source), "source": src,
                             "seed": sp.meta.get("seed"), "target": t.data,
                             "target_key": t.key, "split": t.split, "n": ev.n,
                             "accuracy": ev.accuracy})
                bar.step("")
    finally:
        bar.close()
    df = relative_performance(pd.DataFrame(rows))
    df = df[COLUMNS[:5] + ["target_key"] + COLUMNS[5:]]
    if csv:
        df.to_csv(csv, index=False)
    if png:
        from neurondb.tune.transfer_plot import plot_transfer

        plot_transfer(df, png)
    return df


def transfer_matrix(df: pd.DataFrame, value: str = "relative") -> pd.DataFrame:
    """Mean ``value`` over seeds: rows are sources, columns ``target:split``."""
    d = df.assign(src=df["source"].map(short_name),
                  tgt=df["target_key"].map(short_name) + ":" + df["split"])
    return d.pivot_table(index="src", columns="tgt", values=value, aggfunc="mean",
                         sort=False, dropna=False)
