"""Option groups declared once: every command that runs a model reads the data and the label
the same way, with the same flags, help and defaults, and every analysis of a store (``rank``,
``correlate``, ``overlap``, ``mask``, ``top``) names its store, its other stores, its result
and its selection the same way. Each function returns a fresh ``typer.Option`` (or
``typer.Argument``) for one parameter; :func:`label_kwargs` turns the label group's values into
the keyword arguments of the library (one home for ``--verbalizer a,b`` -> ``["a", "b"]``) and
:func:`scope` the analyses' ``--global``/``--per-layer`` into a request's ``scope``."""

from __future__ import annotations

import typer

from neurondb.errors import UsageError

TASKS_HELP = "Task preset: sst2, imdb, mrpc, qqp, qnli, rte, ag_news, movie_reviews."
DATA_HELP = ("Dataset: task preset, hub name, local csv/tsv/jsonl/parquet file, a directory of "
             "<split>.<ext> files, or 'movie_reviews' (offline).")


# -- the data --------------------------------------------------------------------------------
def data(required: bool = True, help: str = DATA_HELP):  # noqa: A002 - typer's word
    return typer.Option(... if required else None, "--data", help=help)


def split(default: str = "validation", help: str = "Split to read."):  # noqa: A002
    return typer.Option(default, "--split", help=help)


def data_config():
    return typer.Option(None, "--data-config", help="Hub dataset configuration.")


def text_field():
    return typer.Option(None, "--text-field", help="Text field; give twice for sentence pairs "
                        "({text1}, {text2}).")


def label_field():
    return typer.Option("label", "--label-field", help="Label field (integer classes or "
                        "strings).")


def max_examples():
    return typer.Option(None, "--max-examples", help="Only the first N examples of each split.")


# -- how the label is read -------------------------------------------------------------------
def template():
    return typer.Option(None, "--template", help="Template with {text}/{text1}/{text2} and a "
                        "{mask} slot (default: the prompt's, else the task preset's).")


def verbalizer():
    return typer.Option(None, "--verbalizer", help="Comma list of label words, in label order.")


def task():
    return typer.Option(None, "--task", help=TASKS_HELP)


def readout(help: str = "auto, mlm, causal, seq2seq, classifier, head or none."):  # noqa: A002
    return typer.Option("auto", "--readout", help=help)


def prompt(help: str = "Soft prompt: a `neurondb tune` or PEFT prompt directory, or a "  # noqa: A002
           "[P, d_model] tensor file."):
    return typer.Option(None, "--prompt", help=help)


# -- running ---------------------------------------------------------------------------------
def batch_size(default: int = 32):
    return typer.Option(default, "--batch-size", help="Examples per forward pass.")


def max_length():
    return typer.Option(None, "--max-length", help="Token limit of the text (shortened, the "
                        "mask kept).")


def device():
    return typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")


def overwrite(help: str = "Replace what exists under the same name."):  # noqa: A002
    return typer.Option(False, "--overwrite", help=help)


def quiet():
    return typer.Option(False, "--quiet", "-q", help="No progress bar.")


def label_kwargs(*, text_field: list[str] | None = None, verbalizer: str | None = None,
                 **rest) -> dict:
    """The library's keyword arguments for the data and label options: ``text_fields`` as a
    list (None when not given), ``verbalizer`` split at commas."""
    return {"text_fields": list(text_field) if text_field else None,
            "verbalizer": [w for w in verbalizer.split(",")] if verbalizer else None, **rest}


# -- the analyses of a store -----------------------------------------------------------------
WITH_HELP = "Open another store together with STORE (repeatable)."


def store_dir():
    return typer.Argument(..., help="Store directory.")


def also():
    return typer.Option(None, "--with", help=WITH_HELP)


def name(help: str):  # noqa: A002
    return typer.Option(None, "--name", help=help)


def fraction(flag: str = "--fraction", help: str = "Fraction of neurons to select (top)."):  # noqa: A002
    return typer.Option(0.05, flag, help=help)


def count_rule(help: str):  # noqa: A002
    return typer.Option("int", "--count-rule", help=help)


def top_k(default: int | None, help: str):  # noqa: A002
    return typer.Option(default, "--top-k", "-k", help=help)


def slots(help: str):  # noqa: A002
    return typer.Option(None, "--slots", help=help)


def stack(help: str = "Only this stack (repeatable)."):  # noqa: A002
    return typer.Option(None, "--stack", help=help)


def png(help: str):  # noqa: A002
    return typer.Option(None, "--png", help=help)


def global_scope(help: str):  # noqa: A002
    return typer.Option(False, "--global", help=help)


def per_layer(help: str):  # noqa: A002
    return typer.Option(False, "--per-layer", help=help)


def scope(global_: bool, per_layer: bool = False) -> str | None:
    """A request's ``scope`` from ``--global``/``--per-layer`` (None: the method's default);
    the two flags are one field, so giving both is refused here."""
    if global_ and per_layer:
        raise UsageError("--global and --per-layer exclude each other")
    return "global" if global_ else "layer" if per_layer else None
