"""`neurondb extract`."""

from __future__ import annotations

from pathlib import Path

import typer

from neurondb.cli import options as opt
from neurondb.cli.errors import one_line_errors


def extract_command(
    model: str = typer.Argument(..., help="Hugging Face model name or local directory (or .gguf file)."),
    data: str = opt.data(),
    out: Path = typer.Option(..., "--out", help="Store directory (created, or an existing store of the same model)."),
    split: str = opt.split(help="Split captured per token."),
    data_config: str | None = opt.data_config(),
    text_field: list[str] | None = opt.text_field(),
    label_field: str = opt.label_field(),
    template: str | None = opt.template(),
    verbalizer: str | None = opt.verbalizer(),
    task: str | None = opt.task(),
    readout: str = opt.readout(),
    prompt: str | None = opt.prompt(),
    positions: str | None = typer.Option(None, "--positions", help="Comma list of prompt, mask, first, last, all (default prompt,mask; all with --profile)."),
    stats_split: str | None = typer.Option(None, "--stats-split", help="Also capture this split as running statistics only (baselines)."),
    grad: bool = typer.Option(False, "--grad", help="Also record gradients dF/dh of the target logit."),
    grad_target: str = typer.Option("gold", "--grad-target", help="gold (label word logit), pred, or loss (log-probability of the gold label)."),
    dtype: str | None = typer.Option(None, "--dtype", help="Storage dtype: float16, bfloat16, float32 (default: float32 when only some positions are captured, float16 with all)."),
    model_dtype: str | None = typer.Option(None, "--model-dtype", help="Load the model in float32, float16 or bfloat16."),
    max_examples: int | None = opt.max_examples(),
    batch_size: int = opt.batch_size(),
    max_length: int | None = opt.max_length(),
    device: str = opt.device(),
    run: str | None = typer.Option(None, "--run", help="Run name (default: <dataset>-<split>)."),
    overwrite: bool = opt.overwrite(help="Replace runs of the same name."),
    chunk_examples: int = typer.Option(4096, "--chunk-examples", help="Examples per shard: the unit of atomic commits, resume and multi-process work."),
    device_map: str | None = typer.Option(None, "--device-map", help="Spread a large model over GPUs (e.g. 'auto'; needs accelerate)."),
    quiet: bool = opt.quiet(),
    encoding: str = typer.Option("utf-8", "--encoding", help="Text encoding of a csv/tsv/jsonl data file (e.g. latin-1, cp1252); undecodable bytes are an error naming the offset."),
    profile: bool = typer.Option(False, "--profile", help="Reduce every captured token on the device into a neuron profile (count, mean, std, min, max, frac_positive, histogram, exact top/bottom-K); no per-token tensors are stored."),
    top_k: int = typer.Option(20, "--top-k", help="--profile: tokens kept per neuron at the top and at the bottom."),
    profile_bins: int = typer.Option(256, "--profile-bins", help="--profile: histogram bins per layer (plus under/overflow)."),
    correlate_layers: str | None = typer.Option(None, "--correlate-layers", help="--profile: also accumulate the Pearson sums between every pair of neurons of these layers (comma list; 8 x neurons^2 bytes); read with `neurondb correlate-neurons STORE --runs RUN`."),
    also_capture: str | None = typer.Option(None, "--also-capture", help="--profile: also store per-token tensors of these positions (e.g. mask), as the run <run> beside <run>-profile, from the same forward pass."),
    drop_missing_text: bool = typer.Option(False, "--drop-missing-text", help="Skip rows whose text is missing (None/NaN) and print how many; without it such a row is an error naming it."),
) -> None:
    """Run MODEL over a dataset and record FFN neuron activations into a store.

    Re-running the same command after an interruption resumes from the last complete shard.
    Under torchrun / accelerate launch every rank writes its own shards of the same store.
    """
    from neurondb.extract.run import extract
    from neurondb.runtime.data import DEFAULT_ENCODING, check_encoding

    with one_line_errors():
        decoding: dict = {}  # only when asked, so the defaults need nothing of extract()
        if check_encoding(encoding) != check_encoding(DEFAULT_ENCODING):
            decoding["encoding"] = encoding
        if drop_missing_text:
            decoding["drop_missing_text"] = True
        if profile:
            decoding.update(profile=True, top_k=top_k, profile_bins=profile_bins)
        if also_capture is not None:
            decoding["also_capture"] = also_capture
        if correlate_layers is not None:
            from neurondb.cli.profile_cmd import _layers

            decoding["correlate_layers"] = _layers(correlate_layers)
        store = extract(
            model, data, out, split=split, data_config=data_config,
            **opt.label_kwargs(text_field=text_field, verbalizer=verbalizer),
            label_field=label_field, template=template, task=task, readout=readout, prompt=prompt, positions=positions,
            stats_split=stats_split, grad=grad, grad_target=grad_target, dtype=dtype,
            model_dtype=model_dtype, max_examples=max_examples, batch_size=batch_size,
            max_length=max_length, device=device, run=run, overwrite=overwrite,
            chunk_examples=chunk_examples, device_map=device_map, progress=not quiet,
            **decoding)
        typer.echo(f"store: {store.path} ({len(store.runs())} runs); "
                   f"try: neurondb info {store.path}")
        store.close()


def register(app: typer.Typer) -> None:
    app.command("extract")(extract_command)
