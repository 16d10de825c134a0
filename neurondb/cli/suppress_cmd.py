"""``neurondb suppress``: accuracy with the top of a ranking (or a mask) replaced, against
random neurons (SPEC §5)."""

from __future__ import annotations

from pathlib import Path

import typer

from neurondb.cli import options as opt
from neurondb.cli.errors import one_line_errors


def suppress_command(
    model: str | None = typer.Argument(None, help="Model (hub name, directory, 'minilm'); default: the one --prompt was tuned on."),
    data: str = opt.data(help="Dataset to score on (preset, hub name, file or directory of <split> files); may differ from the ranking's."),
    split: str = opt.split(help="Split to score."),
    mask: Path | None = typer.Option(None, "--mask", help="Mask file: the neurons to suppress (rates do not apply)."),
    store: Path | None = typer.Option(None, "--store", help="Store holding --ranking; results go to STORE/results/suppression."),
    ranking: str | None = typer.Option(None, "--ranking", help="Ranking name in the store: its top RATE neurons are suppressed."),
    rates: str = typer.Option("1,3,5,10,15", "--rates", help="Percent of FFN neurons to suppress (per layer or global, as the ranking is)."),
    mode: str = typer.Option("zero", "--mode", help="zero, mean (training means from --store) or noise (h + N(0, sigma^2))."),
    seeds: int = typer.Option(3, "--seeds", help="Random controls per rate (same count per layer)."),
    sigma: float = typer.Option(0.1, "--sigma", help="Noise standard deviation for --mode noise."),
    means_run: str | None = typer.Option(None, "--means-run", help="Store run whose statistics give the means (default: the train split)."),
    prompt: Path | None = opt.prompt(help="Tuned prompt directory (`neurondb tune`); sets the readout, template and head."),
    readout: str = opt.readout(help="Without --prompt: auto, mlm, causal, seq2seq or classifier."),
    template: str | None = opt.template(),
    verbalizer: str | None = opt.verbalizer(),
    task: str | None = opt.task(),
    text_field: list[str] | None = opt.text_field(),
    label_field: str = opt.label_field(),
    max_examples: int | None = opt.max_examples(),
    batch_size: int = opt.batch_size(),
    device: str = opt.device(),
    name: str | None = typer.Option(None, "--name", help="Result name (default: suppress_<ranking>_<data>_<split>)."),
    png: Path | None = typer.Option(None, "--png", help="Plot of accuracy vs rate (default with --store: STORE/results/suppression/<name>.png)."),
    overwrite: bool = opt.overwrite(help="Replace a result of the same name."),
    quiet: bool = opt.quiet(),
    allow_foreign: bool = typer.Option(False, "--allow-foreign", help="Accept a ranking, mask or means of another model (a deliberate cross-model study); results then go only to --results-store."),
    results_store: Path | None = typer.Option(None, "--results-store", help="Store of MODEL to write the results to (default: --store when it is MODEL's)."),
) -> None:
    """Suppress the top RATE of a ranking (or a mask) and compare with random neurons."""
    from rich.console import Console
    from rich.table import Table

    from neurondb.intervene.suppress import _default_name, suppress

    with one_line_errors():
        res_name = name or _default_name(ranking, mask, data, split)
        target = results_store or store
        if png is None and target is not None:
            png = target / "results" / "suppression" / f"{res_name}.png"
        res = suppress(model, data, prompt=prompt, split=split, store=store, ranking=ranking,
                       mask=mask, rates=rates, mode=mode, seeds=seeds, sigma=sigma,
                       means_run=means_run, readout=readout, template=template, task=task,
                       **opt.label_kwargs(text_field=text_field, verbalizer=verbalizer),
                       label_field=label_field, max_examples=max_examples,
                       batch_size=batch_size, device=device, name=res_name, png=png,
                       overwrite=overwrite, progress=not quiet, allow_foreign=allow_foreign,
                       results_store=results_store)
    summary = res.summary()
    n = int(res.table["n"].iloc[0])
    table = Table(title=f"suppression ({mode}) on {data}:{split}, {n} examples")
    for col in ("rate %", "neurons", "no suppression", "selected", "random mean",
                "random min-max"):
        table.add_column(col, justify="right")
    for r in summary.itertuples():
        table.add_row(f"{100 * r.rate:g}", str(r.n_neurons), f"{r.baseline:.4f}",
                      f"{r.selected:.4f}", f"{r.random_mean:.4f}" if r.random_mean == r.random_mean
                      else "-", f"{r.random_min:.4f}-{r.random_max:.4f}"
                      if r.random_min == r.random_min else "-")
    console = Console()
    console.print(table)
    if res.path:
        console.print(f"wrote {res.path}")
    if res.png:
        console.print(f"wrote {res.png}")
    if res.note:
        console.print(f"note: {res.note}")


def register(app: typer.Typer) -> None:
    app.command("suppress")(suppress_command)
