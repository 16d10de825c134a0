"""`neurondb correlate-neurons`: Pearson r between the neurons of two runs (SPEC §9)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from neurondb.cli import options
from neurondb.cli.analyze_cmd import _open, _print
from neurondb.cli.errors import one_line_errors


def _layers(spec: str | None) -> list[int] | None:
    from neurondb.errors import UsageError

    if spec is None:
        return None
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--layers takes a comma list of layer numbers, not {spec!r}") from None


def correlate_neurons_command(
    store: Path = options.store_dir(),
    runs: str = typer.Option(..., "--runs", help="Two runs with per-token activations over the same tokens, A,B; or one profile run extracted with --correlate-layers (within-model)."),
    layers: str | None = typer.Option(None, "--layers", help="Comma list of layers (default all), of both runs."),
    top: int = typer.Option(5, "--top", help="Best partners kept per neuron of A."),
    stack: str | None = options.stack("Stack (default: the first)."),
    png: Path | None = options.png("Figure of max correlation per layer (default: STORE/results/neuron_correlations/<name>.png)."),
    name: str | None = options.name("Result name (default ncorr_A+B)."),
    block_rows: int = typer.Option(4096, "--block-rows", help="Rows read per block (memory: block x neurons x 8 bytes per run)."),
    overwrite: bool = options.overwrite("Replace a result of the same name."),
    also: list[Path] | None = options.also(),
) -> None:
    """Correlate every neuron of run A with every neuron of run B over the same tokens; per
    neuron its best partners, per layer the distribution of the maximum."""
    from neurondb.query.correlate_neurons import TABLE, correlate_neurons
    from neurondb.query.results import default_name

    with one_line_errors():
        st = _open(store, also)
        ls = _layers(layers)
        names = [n.strip() for n in runs.split(",")]
        res_name = name or default_name("ncorr", names)
        if png is None:
            png = st.path / "results" / TABLE / f"{res_name}.png"
        res = correlate_neurons(st, runs, layers=ls, top=top, stack=stack, name=res_name,
                                png=png, overwrite=overwrite, block_rows=block_rows,
                                say=lambda m: Console(stderr=True).print(m, markup=False))
        summary = (res.table[res.table.partner_rank == 1].groupby("layer")["corr"]
                   .describe()[["count", "mean", "50%", "max"]].reset_index())
        _print(summary, f"max correlation per neuron of {names[0]} with {names[-1]}, per layer")
        _print(res.table.sort_values("corr", ascending=False).head(10),
               "best pairs", ["layer", "neuron", "partner_layer", "partner_neuron", "corr"])
        Console().print(f"result: {res.path}; figure: {res.png}")
        st.close()


def register(app: typer.Typer) -> None:
    app.command("correlate-neurons")(correlate_neurons_command)
