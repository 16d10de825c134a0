"""``neurondb demo``: the main job end to end, offline (MiniLM on movie-review sentences)."""

from __future__ import annotations

from pathlib import Path

import typer

from neurondb.cli.errors import one_line_errors


def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Directory for prompts, store, pruned model and report."),
    seeds: str = typer.Option("1,2", "--seeds", help="Prompt seeds (one tuned prompt each)."),
    prompt_tokens: int = typer.Option(20, "--prompt-tokens"),
    train: int = typer.Option(600, "--train", help="Training sentences for prompt tuning."),
    validation: int = typer.Option(300, "--validation", help="Validation sentences (early stopping, extraction, suppression, pruning); the running statistics cover as many training sentences."),
    epochs: int = typer.Option(8, "--epochs", help="Most tuning epochs per seed."),
    random_seeds: int = typer.Option(3, "--random-seeds", help="Random controls per suppression rate."),
    attribution_examples: int = typer.Option(64, "--attribution-examples", help="Training sentences extracted with gradients for the attribution ranking that pruning follows."),
    margin: float = typer.Option(0.01, "--margin", help="Accepted accuracy drop of the pruning ratio search."),
    condense_epochs: int = typer.Option(3, "--condense-epochs", help="Epochs of re-tuning on the pruned model (0: skip)."),
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
        cfg = DemoConfig(out=out, model=model, data=data, seeds=_int_list(seeds, "--seeds"),
                         prompt_tokens=prompt_tokens, train=train, validation=validation,
                         epochs=epochs, random_seeds=random_seeds, margin=margin,
                         attribution_examples=attribution_examples,
                         condense_epochs=condense_epochs, device=device, overwrite=overwrite,
                         progress=not quiet)
        summary = run_demo(cfg, say=typer.echo)
    typer.echo("")
    typer.echo(summary.text())
    typer.echo(f"\nBrowse the store: neurondb serve {out / 'store'}   (then open http://127.0.0.1:8000/)")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
