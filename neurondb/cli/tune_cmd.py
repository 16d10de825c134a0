"""`neurondb tune` (prompt tuning) and `neurondb transfer` (prompt transfer)."""

from __future__ import annotations

from pathlib import Path

import typer

from neurondb.cli import options as opt
from neurondb.cli.errors import one_line_errors
from neurondb.errors import UsageError
from neurondb.tune import defaults


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UsageError(f"{flag} takes a comma list of integers, not {text!r}") from None
    if not out:
        raise UsageError(f"{flag} takes a comma list of integers, not {text!r}")
    return out


def _fmt(x, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    return format(x, spec)


def tune_command(
    model: str = typer.Argument(..., help="Hugging Face model name or local directory ('minilm' for the offline MiniLM)."),
    data: str = typer.Argument(..., help="Dataset: task preset, hub name, local file, directory of <split>.<ext> files, or 'movie_reviews'."),
    out: Path = typer.Option(..., "--out", help="Directory for the prompts: one OUT/seed-<k>/ per seed."),
    prompt_tokens: int = typer.Option(100, "--prompt-tokens", help="P, the number of soft-prompt vectors."),
    seeds: str = typer.Option("1,2,3", "--seeds", help="Comma list of seeds, one prompt each."),
    split: str = opt.split("train", help="Training split."),
    eval_split: str = typer.Option("validation", "--eval-split", help="Validation split for early stopping ('none': keep the last epoch)."),
    data_config: str | None = opt.data_config(),
    lr: float = typer.Option(defaults.LR, "--lr", help="AdamW learning rate of the prompt."),
    head_lr: float = typer.Option(defaults.HEAD_LR, "--head-lr", help="AdamW learning rate of the classification head (readout head)."),
    epochs: int = typer.Option(defaults.EPOCHS, "--epochs", help="Most epochs."),
    patience: int = typer.Option(defaults.PATIENCE, "--patience", help="Stop after this many epochs without a better validation accuracy (0: never)."),
    batch_size: int = opt.batch_size(defaults.BATCH_SIZE),
    max_examples: int | None = opt.max_examples(),
    max_eval_examples: int | None = typer.Option(None, "--max-eval-examples", help="Only the first N validation examples (default: --max-examples)."),
    template: str | None = opt.template(),
    verbalizer: str | None = opt.verbalizer(),
    task: str | None = opt.task(),
    readout: str = opt.readout(help="auto, mlm, causal, seq2seq, classifier or head (auto: head for an encoder without an LM head)."),
    pool: str = typer.Option("mask", "--pool", help="Where a head reads: mask, first or mean."),
    init: str = typer.Option("vocab", "--init", help="Prompt init: vocab (embeddings of sampled tokens) or random."),
    text_field: list[str] | None = opt.text_field(),
    label_field: str = opt.label_field(),
    max_length: int | None = opt.max_length(),
    device: str = opt.device(),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing seed directories."),
    quiet: bool = opt.quiet(),
    from_prompt: Path | None = typer.Option(None, "--from-prompt", help="Start from this tuned prompt (and head) instead of a fresh one: knowledge condensation on a pruned export (`neurondb tune EXPORT DATA --from-prompt EXPORT/prompt`); accuracy before and after is reported."),
) -> None:
    """Tune soft prompts (one per seed) for a frozen MODEL on DATA."""
    import json

    from rich.console import Console
    from rich.table import Table

    from neurondb.runtime.prompt import PROMPT_JSON
    from neurondb.tune.train import tune_prompt

    with one_line_errors():
        dirs = tune_prompt(
            model, data, out, split=split,
            eval_split=None if eval_split.lower() == "none" else eval_split,
            data_config=data_config,
            **opt.label_kwargs(text_field=text_field, verbalizer=verbalizer),
            label_field=label_field, template=template, task=task,
            readout=readout, prompt_tokens=prompt_tokens, seeds=_int_list(seeds, "--seeds"),
            lr=lr, head_lr=head_lr, epochs=epochs, patience=patience, batch_size=batch_size,
            max_examples=max_examples, max_eval_examples=max_eval_examples, max_length=max_length, init=init, pool=pool,
            device=device, overwrite=overwrite, progress=not quiet, from_prompt=from_prompt)
        metas = [json.loads((d / PROMPT_JSON).read_text()) for d in dirs]
        n_tok = metas[0]["n_tokens"] if metas else prompt_tokens
        cols = ["prompt", "val acc", "kept", "epochs", "loss 1st", "loss last", "s"]
        if from_prompt is not None:
            cols.insert(1, "val acc before")
        title = f"prompt tuning: {model} on {data}, {n_tok} tokens"
        if from_prompt is not None:
            title += f", from {from_prompt}"
        table = Table(title=title)
        for col in cols:
            table.add_column(col, justify="left" if col == "prompt" else "right", no_wrap=True,
                             min_width=len(col))
        for d, m in zip(dirs, metas):
            row = [d.name, _fmt(m["best_eval_accuracy"]),
                   str(m["best_epoch"]), str(m["epochs_run"]), _fmt(m["first_train_loss"]),
                   _fmt(m["final_train_loss"]), _fmt(m["seconds"], ".1f")]
            if from_prompt is not None:
                row.insert(1, _fmt((m.get("from_prompt") or {}).get("eval_accuracy_before")))
            table.add_row(*row)
        Console().print(table)
        typer.echo(f"prompts in {out}; use one with: neurondb extract {model} --data {data} "
                   f"--prompt {dirs[0]} --out STORE")


def transfer_command(
    prompts: str = typer.Option(..., "--prompts", help="Comma list of prompt directories (or `neurondb tune --out` directories: all their seeds)."),
    data: str = typer.Option(..., "--data", help="Comma list of DATA:split targets (split defaults to validation)."),
    model: str | None = typer.Option(None, "--model", help="Model (default: the one the prompts were tuned on)."),
    png: Path | None = typer.Option(None, "--png", help="Write the transfer heatmap here."),
    csv: Path | None = typer.Option(None, "--csv", help="Write the table (one row per prompt and target) here."),
    max_examples: int | None = typer.Option(None, "--max-examples", help="Only the first N examples of each target."),
    batch_size: int = typer.Option(32, "--batch-size"),
    device: str = opt.device(),
    quiet: bool = opt.quiet(),
    store: Path | None = typer.Option(None, "--store", help="Also write the table to STORE/results/transfers/NAME.parquet (for SQL and `neurondb report`)."),
    name: str = typer.Option("transfer", "--name", help="Result name with --store."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a result of the same name."),
) -> None:
    """Evaluate every tuned prompt on every dataset: accuracy and relative performance."""
    from rich.console import Console
    from rich.table import Table

    from neurondb.tune.transfer import short_name, transfer

    with one_line_errors():
        st = None
        if store is not None:
            from neurondb.query.results import check_absent
            from neurondb.store.reader import open_store

            st = open_store(store)
            check_absent(st, "transfers", name, overwrite)
        df = transfer([p for p in prompts.split(",") if p.strip()],
                      [d for d in data.split(",") if d.strip()], model,
                      max_examples=max_examples, batch_size=batch_size, device=device,
                      png=png, csv=csv, progress=not quiet)
        table = Table(title="prompt transfer: relative = acc(T | S) / acc(T | T) x 100")
        for col in ("prompt", "tuned on", "seed", "target", "n", "acc", "rel %"):
            table.add_column(col, justify="left" if col in ("prompt", "tuned on", "target")
                             else "right")
        for r in df.itertuples():
            table.add_row(f"{Path(r.prompt).parent.name}/{Path(r.prompt).name}",
                          short_name(r.source), _fmt(r.seed, ""),
                          f"{short_name(r.target_key)}:{r.split}", str(r.n),
                          _fmt(r.accuracy), _fmt(r.relative, ".1f"))
        Console().print(table)
        if st is not None:
            from neurondb.query.results import write_result

            path = write_result(st, "transfers", name, df,
                                {"prompts": prompts, "data": data, "model": model},
                                overwrite=overwrite)
            typer.echo(f"wrote {path}")
        for f in (png, csv):
            if f:
                typer.echo(f"wrote {f}")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)
    app.command("transfer")(transfer_command)
