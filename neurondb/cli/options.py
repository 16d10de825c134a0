"""Option groups declared once: every command that runs a model reads the data and the label
the same way, with the same flags, help and defaults. Each function returns a fresh
``typer.Option`` for one parameter; :func:`label_kwargs` turns the group's values into the
keyword arguments of the library (one home for ``--verbalizer a,b`` -> ``["a", "b"]``)."""

from __future__ import annotations

import typer

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
