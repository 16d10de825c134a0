"""The report's profile section: per profile run, a per-layer summary of ``neuron_profile``,
the distribution of ``frac_positive`` per layer, and the top tokens (with context) of the
neurons that fire hardest. Shown only when the store holds profile runs."""

from __future__ import annotations

import pandas as pd

from neurondb.report import figures
from neurondb.report import html as H
from neurondb.report.html import Section

NEURONS = 5
TOKENS = 5
WIDTH = 5


def _frac_positive_png(df: pd.DataFrame, run: str) -> bytes:
    plt = figures._pyplot()
    keys = sorted({(s, la) for s, la in zip(df["stack"], df["layer"])})
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * len(keys), 3.5))
    data = [df[(df["stack"] == s) & (df["layer"] == la)]["frac_positive"].to_numpy()
            for s, la in keys]
    ax.boxplot(data, positions=range(len(keys)), widths=0.6)
    ax.set_xticks(range(len(keys)), [f"{s[:3]} {la}" for s, la in keys])
    ax.set_ylabel("frac_positive (P[h > 0])")
    ax.set_title(f"activation probability per layer, {run}", fontsize=9)
    return figures.fig_png(fig)


def _layer_summary(df: pd.DataFrame) -> pd.DataFrame:
    return (df.groupby(["stack", "layer"])
            .agg(neurons=("neuron", "size"), tokens=("count", "first"),
                 frac_positive=("frac_positive", "mean"), std=("std", "median"),
                 max=("max", "max"), q_error=("q_error", "max")).reset_index())


def _hardest(store, run: str, df: pd.DataFrame) -> str:
    parts = []
    for _, r in df.nlargest(NEURONS, "max").iterrows():
        ctx = store.connection.arrow(
            f"SELECT rank, value, context, label FROM top_contexts('{run}', '{r['stack']}', "
            f"{int(r.layer)}, {int(r.neuron)}, k := {TOKENS}, width := {WIDTH})").to_pandas()
        parts.append(H.para(f"{r['stack']} layer {int(r.layer)}, neuron {int(r.neuron)}: max "
                            f"{r['max']:.3g}, frac_positive {r.frac_positive:.3f}", "meta"))
        parts.append(H.table(ctx, text_columns=("context",)))
    return "".join(parts)


def profiles_section(store) -> Section:
    """One block per profile run (absent, and not shown, when there are none)."""
    from neurondb.profile.read import profile_runs

    sec = Section("profiles", "Neuron profiles",
                  note="none in this store; make one with `neurondb extract ... --profile`")
    parts = []
    runs = profile_runs(store)
    for run in runs:
        df = store.profile(run=run)
        parts.append(H.heading(run))
        parts.append(H.para("Per layer: tokens reduced, mean activation probability, median "
                            "std, largest activation and the largest quantile error bound.",
                            "meta"))
        parts.append(H.table(_layer_summary(df)))
        parts.append(H.image(_frac_positive_png(df, run), f"frac_positive per layer {run}"))
        sec.figures += 1
        parts.append(H.heading(f"top tokens of the {NEURONS} hardest-firing neurons", 4))
        parts.append(_hardest(store, run, df))
    sec.body = "".join(parts)
    sec.summary = f"{len(runs)} profile run(s)"
    return sec
