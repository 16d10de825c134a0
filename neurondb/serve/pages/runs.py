"""``/runs/{run}``: a run's examples, paged and filtered, and its accuracy."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from neurondb.query.layout import label_names
from neurondb.serve import params as P
from neurondb.serve.context import ServeContext
from neurondb.serve.errors import BadRequestError

PER_PAGE = 50
PARAMS = ("label", "correct", "q", "page")


def label_table(df: pd.DataFrame, names: list[str]) -> list[dict]:
    """Per label: examples, and accuracy where the run was scored."""
    out = []
    for i, name in enumerate(names):
        g = df[df["label"] == i]
        scored = g["correct"].dropna() if "correct" in g else pd.Series(dtype=bool)
        out.append({"label": name, "n": len(g),
                    "accuracy": float(scored.mean()) if len(scored) else None})
    return out


def label_index(label: str, names: list[str]) -> int:
    """A label given by name or by index (else 400)."""
    if label in names:
        return names.index(label)
    if label.isascii() and label.isdigit() and int(label) < len(names):
        return int(label)
    raise BadRequestError(f"parameter 'label' must be one of {', '.join(names) or 'none'}")


def run_page(ctx: ServeContext, run: str, query: Mapping[str, str]) -> dict:
    """The run page's data; filters ``label`` (name or index), ``correct``, ``q`` (text)."""
    P.known(query, PARAMS)
    info = ctx.run(run)
    df = ctx.examples(info)
    labels = df["label"].fillna(-1).to_numpy(np.int64)
    names = label_names(info, labels)
    keep = np.ones(len(df), bool)
    label = P.text(query, "label")
    if label is not None:
        keep &= labels == label_index(label, names)
    correct = P.boolean(query, "correct")
    if correct is not None:
        keep &= (df["correct"] == correct).fillna(False).to_numpy(bool)
    q = P.text(query, "q")
    if q is not None:
        keep &= df["text"].fillna("").str.contains(q, case=False, regex=False).to_numpy(bool)
    sel = df[keep]
    pages = max(1, -(-len(sel) // PER_PAGE))
    page = P.integer(query, "page", 1, 1, pages)
    shown = sel.iloc[(page - 1) * PER_PAGE: page * PER_PAGE]
    rows = [{"example_id": int(r.example_id), "text": r.text or "",
             "label": names[int(r.label)] if r.label is not None and 0 <= r.label < len(names)
             else "—",
             "pred": names[int(r.pred)] if pd.notna(r.pred) and 0 <= r.pred < len(names)
             else "—",
             "correct": None if pd.isna(r.correct) else bool(r.correct)}
            for r in shown.itertuples()]
    return {"info": info, "names": names, "rows": rows, "n_match": len(sel), "page": page,
            "pages": pages, "per_labels": label_table(df, names),
            "filters": {"label": label or "", "correct": "" if correct is None else
                        str(correct).lower(), "q": q or ""}}
