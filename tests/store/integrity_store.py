"""A small real store for the integrity tests, and the damage they do to it.

A tiny BERT extracted with ``--chunk-examples 3``: a tokens run of the validation split
(12 examples, 4 shards) and a stats run of the training split (24 examples, 8 shards), a
predictivity ranking ``r``, a mask result ``m`` made from it, and a portable mask file next to
the store. Tests copy it (:func:`fresh_copy`) before damaging the copy.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import neurondb

KW = dict(template="{text} It was {mask}.", verbalizer=["bad", "good"], positions="mask,first",
          batch_size=4, chunk_examples=3, progress=False)


def build_store(tmp: Path, model: Path, data: Path) -> Path:
    """Extract the store into ``tmp/store`` (plus ``tmp/portable_mask.parquet``)."""
    from neurondb.query import make_mask, rank

    out = tmp / "store"
    neurondb.extract(str(model), str(data), out, stats_split="train", **KW).close()
    st = neurondb.open(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exactness warnings of a float16 tiny store
        rank(st, "predictivity", eval="validation", train="train", name="r")
    make_mask(st, "r", 0.1, name="m", out=tmp / "portable_mask.parquet")
    st.close()
    return out


def run_names(root: Path) -> tuple[str, str]:
    """``(tokens run of validation, stats run of train)``."""
    st = neurondb.open(root)
    try:
        return st.run(split="validation").run, st.run(split="train").run
    finally:
        st.close()


def fresh_copy(ref: Path, dest: Path) -> Path:
    shutil.copytree(ref, dest)
    return dest


def damage(f: Path, how: str) -> None:
    """``truncate`` to half, ``flip`` every bit of the middle byte, or ``delete``."""
    if how == "delete":
        f.unlink()
        return
    data = bytearray(f.read_bytes())
    if how == "truncate":
        f.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    else:
        raise ValueError(how)
