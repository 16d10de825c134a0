"""The demo's printed summary (``OUT/summary.txt``): what each step measured, then what it
found against the papers' claims."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neurondb.demo_timing import clock

if TYPE_CHECKING:
    from neurondb.demo import DemoSummary


def _suppression_lines(s: DemoSummary) -> list[str]:
    from neurondb.findings import suppression_rate_verdict

    lines = ["suppression (accuracy; skill vs random mean [min, max] over seeds):"]
    for r in s.suppression:
        lines.append(f"  {100 * r['rate']:4.0f}% ({r['n_neurons']} neurons): skill "
                     f"{r['selected']:.4f}  random {r['random_mean']:.4f} "
                     f"[{r['random_min']:.4f}, {r['random_max']:.4f}]  (none "
                     f"{r['baseline']:.4f}) -> {suppression_rate_verdict(r)}")
    return lines


def _pruning_lines(s: DemoSummary) -> list[str]:
    from neurondb.report.params import parameter_breakdown

    p = s.pruning
    if p.get("error"):
        return [f"pruning: {p['error']}"]
    if not p:
        return []
    lines = [f"pruning: ratio {p['ratio']:.2f} chosen in {p['evaluations']} evaluations "
             f"(margin {p['margin']:g}); accuracy {p['acc_full']:.4f} -> "
             f"{p['acc_pruned']:.4f}; parameters {p['params_full']:,} -> "
             f"{p['params_pruned']:,}"]
    b = parameter_breakdown(p["params_full"], p["params_pruned"], p.get("n_removed", 0),
                            p.get("n_neurons", 0))
    if b is not None:
        lines.append(f"  {b.text()}")
    c = s.latency_context
    where = (f" ({c['threads']} torch threads on {c['cores']} cores, load average "
             f"{' / '.join(f'{x:.2f}' for x in c['load_average'])} over 1 / 5 / 15 min)"
             if c else "")
    lines.append(f"  latency{where}:")
    for bs, sp in p["speedup"].items():
        lines.append(f"  batch {bs}: {p['latency_full'][bs]:.1f} ms -> "
                     f"{p['latency_pruned'][bs]:.1f} ms ({sp:.2f}x)")
    return lines


def summary_text(s: DemoSummary) -> str:
    """Every measured figure, then the findings, then the time per step and in all."""
    c = s.config
    lines = [f"neurondb demo: {c['model']} on {c['data']} ({c['train']} train / "
             f"{c['validation']} validation sentences, {c['prompt_tokens']} prompt tokens)"]
    lines.append("prompt tuning (validation accuracy):")
    for p in s.prompts:
        lines.append(f"  seed {p['seed']}: {p['accuracy']:.4f} (epoch {p['best_epoch']}, "
                     f"{p['seconds']:.0f} s)")
    r = s.ranking
    if r:
        lines.append(f"skill neurons: top predictivity {r['top_score']:.4f} "
                     f"({r['top_neuron']}, above its baseline on {r.get('top_class') or '?'}); "
                     f"mean over neurons {r['mean_score']:.4f}")
    if s.suppression:
        lines += _suppression_lines(s)
    a = s.attribution
    if a:
        lines.append(f"attribution (pruning ranking, {a['examples']} training sentences): "
                     f"top {a['top_neuron']}; top 5% of neurons by layer "
                     f"{a['top5_by_layer']}; against the skill ranking: Spearman "
                     f"{a['spearman_vs_skill']:.3f} (mean over layers), top-5% overlap "
                     f"{a['top5_overlap_vs_skill']:.3f}")
    lines += _pruning_lines(s)
    k = s.condensation
    if k:
        lines.append(f"condensation (re-tuned prompt on the pruned model, {k['epochs']} "
                     f"epoch(s)): accuracy {k['before']:.4f} -> {k['after']:.4f}")
    if s.findings:
        lines.append("findings against the papers:")
        for f in s.findings:
            lines.append(f"  - {f['claim']} ({f['source']}): {f['verdict'].upper()}")
            lines.append(f"    {f['evidence']}")
    total = sum(s.seconds.values())
    lines.append("time: " + ", ".join(f"{n} {v:.0f} s" for n, v in s.seconds.items())
                 + f"; total {clock(total)} (estimated {clock(sum(s.estimate.values()))})")
    m = s.machine
    if m.get("start") and m.get("end"):
        lines.append(f"machine: {m['start']['cores']} cores, {m['start']['threads']} torch "
                     f"threads; load average (1 min) {m['start']['load_average'][0]:.2f} at the "
                     f"start, {m['end']['load_average'][0]:.2f} at the end (other work on the "
                     "machine slows every step)")
    if s.report:
        lines.append(f"report: {s.report}")
    return "\n".join(lines)
