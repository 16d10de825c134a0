"""``neurondb prune``: remove FFN neurons structurally and export a loadable model directory."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from neurondb.cli.errors import one_line_errors


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def _pct(before: float, after: float) -> str:
    return f"-{100 * (before - after) / before:.1f}%" if before else "n/a"


def _summary(report, model_path: str, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    pr = report.prune
    console = Console()
    table = Table(title=f"FFN widths ({pr.family}, format {pr.format})")
    for col in ("stack", "layer", "before", "after", "removed"):
        table.add_column(col, justify="right" if col != "stack" else "left")
    for stack, before in pr.widths_before.items():
        after = pr.widths_after[stack]
        removed = [int(pr.removed.get(stack, la).size) for la in range(len(before))]
        for la, (b, a, r) in enumerate(zip(before, after, removed)):
            table.add_row(stack, str(la), str(b), str(a), str(r))
    console.print(table)
    src = Path(model_path)
    src_files = sorted(src.glob("*.safetensors")) if src.is_dir() else []
    before_bytes = sum(p.stat().st_size for p in src_files)
    sizes = Table(show_header=True, title="size")
    for col in ("", "before", "after", "change"):
        sizes.add_column(col, justify="right" if col else "left")
    sizes.add_row("parameters", f"{pr.params_before:,}", f"{pr.params_after:,}",
                  _pct(pr.params_before, pr.params_after))
    sizes.add_row("weight tensors", _human(report.tensor_bytes_before),
                  _human(report.tensor_bytes_after),
                  _pct(report.tensor_bytes_before, report.tensor_bytes_after))
    if before_bytes:
        sizes.add_row("safetensors files", _human(before_bytes), _human(report.weights_file_bytes),
                      _pct(before_bytes, report.weights_file_bytes))
    else:
        sizes.add_row("safetensors files", "-", _human(report.weights_file_bytes), "")
    console.print(sizes)
    console.print(f"removed {pr.n_removed:,} of {pr.n_neurons_before:,} FFN neurons "
                  f"({100 * pr.ratio:.1f}%)")
    for s, la, n in pr.kept_one:
        console.print(f"[yellow]note:[/] the mask emptied {s} layer {la}; kept neuron {n}")
    if pr.bias_created:
        console.print(f"mean compensation added an output bias to {len(pr.bias_created)} "
                      "layer(s) that had none")
    how = ("transformers.AutoModel...from_pretrained(DIR, trust_remote_code=True) or "
           "neurondb.load_pruned(DIR)" if pr.format == "compact"
           else "transformers.AutoModel...from_pretrained(DIR)")
    console.print(f"wrote {out}; load with {how}")


def prune(
    model: str = typer.Argument(..., help="Hub name or local directory of the model to prune."),
    out: Path = typer.Option(..., "--out", help="Export directory (must not exist)."),
    mask: Path | None = typer.Option(None, "--mask", help="Mask file: the neurons to remove."),
    store: Path | None = typer.Option(None, "--store", help="Store holding the ranking (and "
                                      "the means for --mean-compensation)."),
    ranking: str | None = typer.Option(None, "--ranking", help="Ranking name in the store "
                                       "(STORE/results/rankings/NAME.parquet)."),
    ratio: float | None = typer.Option(None, "--ratio", help="Fraction of FFN neurons to "
                                       "remove, in (0, 1): the lowest-ranked ones."),
    fmt: str = typer.Option("compact", "--format", help="compact (smaller layers, "
                            "trust_remote_code or neurondb.load_pruned) or zeroed (full width, "
                            "plain transformers)."),
    mean_compensation: bool = typer.Option(False, "--mean-compensation", help="Add W_out(:, R) @ "
                                           "mean(h_R) to the output bias (R: the removed "
                                           "neurons; means from the store's statistics)."),
    means_run: str | None = typer.Option(None, "--means-run", help="Store run whose running "
                                         "statistics give the means (default: the train split)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export."),
    search: bool = typer.Option(False, "--search", help="Find the largest ratio on the grid whose "
                                "accuracy on --data stays within --margin of the unpruned "
                                "model (binary search), export it and evaluate it."),
    margin: float = typer.Option(0.01, "--margin", help="--search: accepted accuracy drop."),
    grid: float = typer.Option(0.05, "--grid", help="--search: grid step of the ratio."),
    data: str | None = typer.Option(None, "--data", help="--search/--evaluate: labelled data to "
                                    "score (preset, file or directory of <split> files)."),
    split: str = typer.Option("validation", "--split", help="Split of --data to score."),
    prompt: Path | None = typer.Option(None, "--prompt", help="Tuned prompt (`neurondb tune`) "
                                       "that reads the label; copied into OUT/prompt."),
    evaluate: bool = typer.Option(False, "--evaluate", help="Score the export on --data and "
                                  "time it against the unpruned model (implied by --search)."),
    max_examples: int | None = typer.Option(None, "--max-examples", help="Only the first N "
                                            "examples of --data."),
    batch_size: int = typer.Option(32, "--batch-size", help="Batch size of the scoring."),
    latency_batch: str = typer.Option("1,32", "--latency-batch", help="Batch sizes to time."),
    name: str | None = typer.Option(None, "--name", help="Result name in the store (default: "
                                    "prune_<ranking>)."),
    device: str = typer.Option("auto", "--device"),
    allow_foreign: bool = typer.Option(False, "--allow-foreign", help="Accept a ranking, mask "
                                       "or means of another model (a deliberate cross-model "
                                       "study); nothing is written into that model's store."),
) -> None:
    """Remove FFN neurons (a mask, or the lowest-ranked RATIO of a ranking) and export;
    with --search, choose the ratio on validation data first."""
    from rich.console import Console

    console = Console()
    with one_line_errors():
        from neurondb.intervene.job import PruneRequest, run_prune

        sizes = _latency_sizes(latency_batch)
        req = PruneRequest(model=model, out=out, mask=mask, store=store, ranking=ranking,
                           ratio=ratio, fmt=fmt, mean_compensation=mean_compensation,
                           means_run=means_run, overwrite=overwrite, search=search,
                           margin=margin, grid=grid, evaluate=evaluate, data=data, split=split,
                           prompt=prompt, max_examples=max_examples, batch_size=batch_size,
                           latency_batch=sizes, name=name, device=device,
                           allow_foreign=allow_foreign)

        def log(step: int, r: float, acc: float, ok: bool) -> None:
            what = "unpruned" if step == 0 else ("accepted" if ok else "rejected")
            console.print(f"evaluation {step}: ratio {r:.2f} -> accuracy {acc:.4f} ({what})")

        t0 = time.perf_counter()

        def say(line: str) -> None:
            s = int(time.perf_counter() - t0)
            console.print(f"[{s // 60}:{s % 60:02d}] {line}", markup=False, highlight=False)

        res = run_prune(req, log=log, say=say)
    _print_result(console, res, out, grid=grid, margin=margin, data=data, split=split)


def _latency_sizes(text: str) -> tuple[int, ...]:
    """``--latency-batch``: the batch sizes to time, from a comma list of integers."""
    from neurondb.intervene.errors import PruneError

    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise PruneError(f"--latency-batch takes a comma list of integers, not "
                         f"{text!r}") from None


def _print_result(console, res, out: Path, *, grid: float, margin: float, data: str | None,
                  split: str) -> None:
    """Print what ``neurondb prune`` did: the searched ratio, the export's summary, the
    evaluation against the unpruned model and the files written."""
    if res.search is not None:
        found = res.search.search
        console.print(f"chosen ratio {found.chosen_ratio:.2f}: the largest on the {grid:g} grid "
                      f"within {margin:g} of {found.baseline_accuracy:.4f} "
                      f"({len(found.table) - 1} evaluations)")
    _summary(res.export, res.model_path, out)
    if res.evaluation is not None:
        _print_evaluation(console, res.evaluation, f"pruned vs unpruned on {data}:{split}")
    for f in res.written:
        console.print(f"wrote {f}")
    if res.prompt_dir is not None:
        console.print(f"the prompt is in {res.prompt_dir}")


def _print_evaluation(console, ev, title: str) -> None:
    from rich.table import Table

    from neurondb.intervene.search import speedups

    t = Table(title=title)
    for col in ("model", "accuracy", "parameters", "file", "batch", "latency ms", "speed-up"):
        t.add_column(col, justify="left" if col == "model" else "right")
    sp = speedups(ev)
    for r in ev.itertuples():
        t.add_row(r.model, f"{r.accuracy:.4f}", f"{r.parameters:,}",
                  _human(r.file_bytes) if r.file_bytes else "-", str(r.batch_size),
                  f"{r.latency_ms:.1f}",
                  f"{sp.get(r.batch_size, float('nan')):.2f}x" if r.model == "pruned" else "")
    console.print(t)


def register(app: typer.Typer) -> None:
    """Add ``prune`` to the ``neurondb`` app (``suppress`` comes with the evaluation loop)."""
    app.command("prune")(prune)
