"""The demo's steps, one function each (see :mod:`neurondb.demo` for the chain).

Every step reads its sizes from a :class:`neurondb.demo.DemoConfig`, writes what it found
into the :class:`neurondb.demo.DemoSummary`, and calls only the public functions of
:mod:`neurondb.extract`, :mod:`neurondb.tune`, :mod:`neurondb.query` and
:mod:`neurondb.intervene`, with keyword arguments. Run names are read from the store (the
runs an extraction added), never assumed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neurondb.demo import DemoConfig, DemoSummary

Say = Callable[[str], None]


def _prompt_meta(d: Path) -> dict:
    from neurondb.runtime.prompt import PROMPT_JSON

    return json.loads((Path(d) / PROMPT_JSON).read_text())


def tune(cfg: DemoConfig, summary: DemoSummary) -> list[Path]:
    """Tune one soft prompt (with a head) per seed; record each one's validation accuracy."""
    from neurondb.tune.train import tune_prompt

    dirs = tune_prompt(cfg.model, cfg.data, Path(cfg.out) / "prompts", seeds=cfg.seeds,
                       prompt_tokens=cfg.prompt_tokens, pool="mean", epochs=cfg.epochs,
                       patience=cfg.patience, max_examples=cfg.train,
                       max_eval_examples=cfg.validation, device=cfg.device,
                       progress=cfg.progress)
    for d in dirs:
        m = _prompt_meta(d)
        summary.prompts.append({"seed": m["seed"], "dir": str(d),
                                "accuracy": m["best_eval_accuracy"],
                                "best_epoch": m["best_epoch"], "seconds": m["seconds"]})
    summary.best_prompt = max(summary.prompts, key=lambda p: p["accuracy"])["dir"]
    return list(dirs)


def _extract_new_runs(store: Path, **kw: Any) -> list:
    """Extract into ``store`` and return the :class:`RunInfo` of the runs the call added
    (read from the store, so that the demo never assumes how extraction names runs)."""
    import neurondb
    from neurondb.extract.run import extract as run_extract

    before = set()
    if (store / "manifest.json").exists():
        with neurondb.open(store) as st:
            before = {r.run for r in st.runs()}
    st = run_extract(kw.pop("model"), kw.pop("data"), store, **kw)
    try:
        return [r for r in st.runs() if r.run not in before]
    finally:
        st.close()


def extract(cfg: DemoConfig, summary: DemoSummary, dirs: list[Path]) -> tuple[list[str],
                                                                               list[str]]:
    """Per prompt: validation activations per token and training running statistics.
    Returns ``(evaluation runs, training runs)`` as the store names them."""
    store = Path(cfg.out) / "store"
    summary.store = str(store)
    evals, trains = [], []
    for d in dirs:
        new = _extract_new_runs(store, model=cfg.model, data=cfg.data, prompt=str(d),
                                split="validation", stats_split="train",
                                max_examples=cfg.validation, device=cfg.device,
                                progress=cfg.progress)
        evals += [r.run for r in new if r.mode == "tokens"]
        trains += [r.run for r in new if r.mode != "tokens"]
    summary.runs = {"evaluation": evals, "training": trains}
    return evals, trains


def rank(cfg: DemoConfig, summary: DemoSummary, evals: list[str], trains: list[str]) -> None:
    """Skill neurons by predictivity, the mean over the prompts."""
    from neurondb.query.predictivity import predictivity

    ranking = predictivity(Path(summary.store), eval=evals, train=trains, name="skill",
                           overwrite=True)
    top = ranking.sort_values("score", ascending=False).iloc[0]
    summary.ranking = {"name": "skill", "top_score": float(top["score"]),
                       "top_neuron": f"{top['stack']} layer {int(top['layer'])} neuron "
                                     f"{int(top['neuron'])}",
                       "top_class": str(top.get("class", "")),
                       "mean_score": float(ranking["score"].mean())}


def suppress(cfg: DemoConfig, summary: DemoSummary) -> None:
    """Suppress the top skill neurons at each rate against as many random ones."""
    from neurondb.intervene.suppress import suppress as run_suppress

    store = Path(summary.store)
    res = run_suppress(cfg.model, cfg.data, prompt=summary.best_prompt, store=store,
                       ranking="skill", rates=cfg.rates, seeds=cfg.random_seeds,
                       max_examples=cfg.validation, device=cfg.device, name="skill",
                       png=store / "results" / "suppression" / "skill.png", overwrite=True,
                       progress=cfg.progress)
    summary.suppression = res.summary().to_dict("records")


def attribute(cfg: DemoConfig, summary: DemoSummary) -> None:
    """The pruning ranking: attribution (activation × gradient, global) on training
    sentences extracted with gradients at every token; compared with the skill ranking."""
    from neurondb.query.attribution import attribution
    from neurondb.query.compare import correlate

    store = Path(summary.store)
    new = _extract_new_runs(store, model=cfg.model, data=cfg.data, prompt=summary.best_prompt,
                            split="train", positions="all", grad=True,
                            max_examples=cfg.attribution_examples, run="attribution-train",
                            device=cfg.device, progress=cfg.progress)
    run = next(r.run for r in new if r.grad)
    attr = attribution(store, run, name="attribution", overwrite=True)
    top = attr.sort_values("score", ascending=False)
    n5 = max(1, round(0.05 * len(top)))
    cmp = correlate(store, ["skill", "attribution"], name="skill-vs-attribution",
                    overwrite=True)
    summary.attribution = {
        "name": "attribution", "examples": cfg.attribution_examples, "run": run,
        "top_neuron": f"{top['stack'].iloc[0]} layer {int(top['layer'].iloc[0])} neuron "
                      f"{int(top['neuron'].iloc[0])}",
        "top5_by_layer": {int(k): int(v) for k, v in
                          top.iloc[:n5].groupby("layer").size().items()},
        "spearman_vs_skill": cmp.mean,
        "top5_overlap_vs_skill": float(cmp.overlap.iloc[0, -1])}


def machine_context() -> dict:
    """Threads torch uses, CPU cores, and the load average (1, 5, 15 min) right now."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"threads": int(torch.get_num_threads()), "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in load]}


def prune(cfg: DemoConfig, summary: DemoSummary, say: Say) -> bool:
    """Search the pruning ratio by the attribution ranking, export, reload and time the
    compact model. Returns whether a model was exported (no acceptable ratio is a finding)."""
    import neurondb
    from neurondb.intervene.errors import NoAcceptableRatioError
    from neurondb.intervene.scoring import prepare_scorer
    from neurondb.intervene.search import prune_with_search, speedups
    from neurondb.intervene.selection import read_ranking

    store, out = Path(summary.store), Path(cfg.out)
    scorer = prepare_scorer(cfg.model, cfg.data, prompt=summary.best_prompt,
                            max_examples=cfg.validation, device=cfg.device)
    with neurondb.open(store) as st:
        try:
            outcome = prune_with_search(
                scorer, read_ranking(store, "attribution"), out / "minilm-pruned",
                margin=cfg.margin, store=st, name="attribution",
                batch_sizes=cfg.latency_batches,
                provenance={"model": cfg.model, "store": str(store), "ranking": "attribution",
                            "prompt": summary.best_prompt},
                log=lambda s, r, a, ok: say(f"   evaluation {s}: ratio {r:.2f} -> accuracy "
                                            f"{a:.4f} ({'accepted' if ok else 'rejected'})"))
        except NoAcceptableRatioError as e:  # a finding, not a crash
            say(f"   {e}")
            summary.pruning = {"error": str(e), "margin": cfg.margin,
                               "acc_full": None, "n": cfg.validation}
            return False
    summary.latency_context = machine_context()
    table = outcome.search.table
    with neurondb.open(store) as st:
        n_neurons = sum(sum(w) for w in st.shape.widths.values())
    ev = outcome.evaluation
    full, pruned = ev[ev.model == "full"], ev[ev.model == "pruned"]
    summary.pruning = {
        "ratio": outcome.search.chosen_ratio, "margin": cfg.margin,
        "evaluations": int(len(outcome.search.table) - 1),
        "acc_full": float(full.accuracy.iloc[0]), "acc_pruned": float(pruned.accuracy.iloc[0]),
        "n": int(full.n.iloc[0]),
        "params_full": int(full.parameters.iloc[0]),
        "params_pruned": int(pruned.parameters.iloc[0]),
        "latency_full": {int(r.batch_size): float(r.latency_ms) for r in full.itertuples()},
        "latency_pruned": {int(r.batch_size): float(r.latency_ms) for r in pruned.itertuples()},
        "speedup": speedups(ev), "export": str(outcome.export.out_dir),
        "n_removed": int(table[table.chosen].n_removed.iloc[0]), "n_neurons": int(n_neurons)}
    return True


def condense(cfg: DemoConfig, summary: DemoSummary) -> None:
    """Knowledge condensation: re-tune the prompt (and head) on the pruned model."""
    from neurondb.tune.train import tune_prompt

    export = Path(cfg.out) / "minilm-pruned"
    cdirs = tune_prompt(str(export), cfg.data, Path(cfg.out) / "condensed",
                        from_prompt=export / "prompt", seeds=(cfg.seeds[0],),
                        epochs=cfg.condense_epochs, patience=0, max_examples=cfg.train,
                        max_eval_examples=cfg.validation, device=cfg.device,
                        progress=cfg.progress)
    m = _prompt_meta(cdirs[0])
    summary.condensation = {"before": m["from_prompt"]["eval_accuracy_before"],
                            "after": m["best_eval_accuracy"], "prompt": str(cdirs[0]),
                            "n": int(m["data"]["n_eval_examples"]),
                            "epochs": cfg.condense_epochs}


def report(cfg: DemoConfig, summary: DemoSummary) -> None:
    """The HTML report of the store, with the tuning curves, the condensation and the
    machine the latency was measured on."""
    from neurondb.report import write_report

    out = Path(cfg.out)
    condensed = [out / "condensed"] if summary.condensation else None
    page = write_report(Path(summary.store), out / "report.html", prompts=[out / "prompts"],
                        condensed=condensed, latency_context=summary.latency_context or None,
                        title=f"neurondb demo: {cfg.model} on {cfg.data}")
    summary.report = str(page.path)
