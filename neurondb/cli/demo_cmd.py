"""``neurondb demo``: the main job end to end, offline (MiniLM on movie-review sentences)."""

from __future__ import annotations

from pathlib import Path

import typer

from neurondb.cli.errors import one_line_errors


def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Directory for prompts, store, pruned model and report."),
    full: bool = typer.Option(False, "--full", help="The larger sizes (600 train / 300 validation sentences, 20 prompt tokens, 8 epochs, 5 rates; 7 to 9 minutes on 2 cores) instead of the quick ones (about 2 minutes on 2 quiet cores)."),
    seeds: str | None = typer.Option(None, "--seeds", help="Prompt seeds (one tuned prompt each). [default: 1,2]"),
    prompt_tokens: int | None = typer.Option(None, "--prompt-tokens", help="[default: 8; --full 20]"),
    train: int | None = typer.Option(None, "--train", help="Training sentences for prompt tuning. [default: 128; --full 600]"),
    validation: int | None = typer.Option(None, "--validation", help="Validation sentences (early stopping, extraction, suppression, pruning); the running statistics cover as many training sentences. [default: 128; --full 300]"),
    epochs: int | None = typer.Option(None, "--epochs", help="Most tuning epochs per seed. [default: 3; --full 8]"),
    rates: str | None = typer.Option(None, "--rates", help="Suppression rates in percent, comma-separated. [default: 1,5,15; --full 1,3,5,10,15]"),
    random_seeds: int | None = typer.Option(None, "--random-seeds", help="Random controls per suppression rate. [default: 3]"),
    attribution_examples: int | None = typer.Option(None, "--attribution-examples", help="Training sentences extracted with gradients for the attribution ranking that pruning follows. [default: 32; --full 64]"),
    margin: float | None = typer.Option(None, "--margin", help="Accepted accuracy drop of the pruning ratio search. [default: 0.01]"),
    condense_epochs: int | None = typer.Option(None, "--condense-epochs", help="Epochs of re-tuning on the pruned model (0: skip). [default: 1; --full 3]"),
    model: str = typer.Option("minilm", "--model", help="Model (default: the offline MiniLM)."),
    data: str = typer.Option("movie_reviews", "--data", help="Dataset (default: the offline movie-review sentences)."),
    device: str = typer.Option("auto", "--device"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Tune, extract, rank, suppress, prune, condense and report, offline, in one command."""
    from neurondb.cli.tune_cmd import _int_list
    from neurondb.demo import DemoConfig, run_demo

    with one_line_errors():
        given = {"seeds": None if seeds is None else tuple(_int_list(seeds, "--seeds")),
                 "rates": None if rates is None else tuple(
                     float(r) / 100 for r in _int_list(rates, "--rates")),
                 "prompt_tokens": prompt_tokens, "train": train, "validation": validation,
                 "epochs": epochs, "random_seeds": random_seeds, "margin": margin,
                 "attribution_examples": attribution_examples,
                 "condense_epochs": condense_epochs}
        sizes = {k: v for k, v in given.items() if v is not None}
        common = dict(out=out, model=model, data=data, device=device, overwrite=overwrite,
                      progress=not quiet, **sizes)
        cfg = DemoConfig.full(**common) if full else DemoConfig(**common)
        summary = run_demo(cfg, say=typer.echo)
    typer.echo("")
    typer.echo(summary.text())
    typer.echo(f"\nBrowse the store: neurondb serve {out / 'store'}   (then open http://127.0.0.1:8000/)")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
