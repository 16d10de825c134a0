"""Synthetic stores holding every kind of result, built without a model.

The result tables that the intervention and transfer commands write (``suppression``,
``pruning``, ``pruned_eval``, ``transfers``) are written here directly as Parquet with a
``name`` and a ``params`` column, as ``write_result`` would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neurondb.query import activated_overlap, correlate, make_mask, predictivity, random_ranking
from neurondb.store import open_store
from neurondb.store.catalog import record_result
from neurondb.testing_stores import make_store, write_periodic_run, write_stats_run
from neurondb.tune.curve import EpochRecord, write_curve_csv

WIDTHS = {"encoder": (16, 16)}
SLOTS = ["prompt:0", "prompt:1", "mask"]
TOP = ("encoder", 1, 5)          # planted where the label is 1: +6 at mask, +1 at prompt:1
SECOND = ("encoder", 0, 7)       # planted where the label is 1: -1.5 at mask, -0.5 at prompt:0


def planted(n: int, seed: int) -> tuple[np.ndarray, dict]:
    """Labels and ``{(stack, layer): [n, S, d]}`` Gaussian activations with the two plants."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    acts = {(s, layer): rng.standard_normal((n, len(SLOTS), d))
            for s, ws in WIDTHS.items() for layer, d in enumerate(ws)}
    acts[(TOP[0], TOP[1])][:, 1, TOP[2]] += 1.0 * (y == 1)
    acts[(TOP[0], TOP[1])][:, 2, TOP[2]] += 6.0 * (y == 1)
    acts[(SECOND[0], SECOND[1])][:, 0, SECOND[2]] -= 0.5 * (y == 1)
    acts[(SECOND[0], SECOND[1])][:, 2, SECOND[2]] -= 1.5 * (y == 1)
    return y, acts


def write_table(root: Path, table: str, name: str, df: pd.DataFrame, params: dict) -> Path:
    """``results/<table>/<name>.parquet`` with ``name`` first and ``params`` (JSON) last,
    recorded in the store's catalog as ``write_result`` records it."""
    meta = json.dumps({"name": name, "table": table, **params}, sort_keys=True)
    out = df.copy()
    out.insert(0, "name", name)
    out["params"] = meta
    t = pa.Table.from_pandas(out, preserve_index=False)
    t = t.replace_schema_metadata({b"neurondb": meta.encode()})
    path = root / "results" / table / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path)
    record_result(root, table, name, path)
    return path


def suppression_frame() -> pd.DataFrame:
    """Baseline 0.9; skill neurons fall fast, random neurons slowly (3 seeds)."""
    rows = [dict(rate=0.0, selection="none", seed=-1, accuracy=0.9, n_neurons=0)]
    for rate, skill in ((0.01, 0.8), (0.05, 0.6), (0.1, 0.5)):
        rows.append(dict(rate=rate, selection="skill", seed=-1, accuracy=skill,
                         n_neurons=round(rate * 32)))
        for seed, d in enumerate((0.0, 0.02, -0.02)):
            rows.append(dict(rate=rate, selection="random", seed=seed,
                             accuracy=0.9 - rate + d, n_neurons=round(rate * 32)))
    df = pd.DataFrame(rows)
    return df.assign(n=200, mode="zero", data="synthetic", split="validation")


SEARCH = pd.DataFrame({"step": [0, 1, 2, 3], "ratio": [0.0, 0.5, 0.25, 0.35],
                       "accuracy": [0.9, 0.7, 0.89, 0.86], "n": 200,
                       "baseline_accuracy": 0.9, "within_margin": [True, False, True, False],
                       "chosen": [False, False, True, False], "n_removed": [0, 16, 8, 11]})
PRUNED_EVAL = pd.DataFrame({"model": ["full", "pruned"], "ratio": [0.0, 0.25],
                            "accuracy": [0.9, 0.89], "n": 200, "latency_ms": [120.0, 75.0],
                            "batch_size": 32, "parameters": [22_700_000, 22_700_000 - 8 * 769],
                            "file_bytes": [86_700_000, 73_100_000]})


def transfer_frame() -> pd.DataFrame:
    """Two tasks, two seeds each, every prompt on both targets."""
    from neurondb.tune.transfer import relative_performance

    rows = []
    accs = {("a", "a"): 0.9, ("a", "b"): 0.6, ("b", "a"): 0.7, ("b", "b"): 0.8}
    for (src, tgt), a in accs.items():
        for seed in (1, 2):
            rows.append({"prompt": f"/p/{src}/seed-{seed}", "source": src, "seed": seed,
                         "target": tgt, "target_key": tgt, "split": "validation", "n": 50,
                         "accuracy": a + 0.01 * seed})
    df = relative_performance(pd.DataFrame(rows))
    return df[["prompt", "source", "seed", "target", "target_key", "split", "n", "accuracy",
               "own_accuracy", "relative"]]


def prompt_dir(root: Path) -> Path:
    """A `neurondb tune --out` directory with seeds 1 and 2 (prompt meta and training curve)."""
    for seed in (1, 2):
        d = root / f"seed-{seed}"
        d.mkdir(parents=True)
        recs = [EpochRecord(e, 0.7 - 0.1 * e, 0.5 + 0.1 * e, 0.72 - 0.08 * e + 0.01 * seed,
                            0.5 + 0.08 * e + 0.01 * seed, 1.0) for e in range(1, 5)]
        write_curve_csv(recs, d / "curve.csv")
        best = max(recs, key=lambda r: r.eval_accuracy)
        (d / "neurondb_prompt.json").write_text(json.dumps({
            "seed": seed, "best_epoch": best.epoch, "best_eval_accuracy": best.eval_accuracy,
            "model": "tiny", "data": {"key": "synthetic"}}))
    return root


def condensed_dir(root: Path) -> Path:
    """A prompt re-tuned on a pruned model: 0.85 before, 0.88 after, on 200 examples."""
    d = root / "seed-1"
    d.mkdir(parents=True)
    write_curve_csv([EpochRecord(1, 0.4, 0.8, 0.4, 0.88, 1.0)], d / "curve.csv")
    (d / "neurondb_prompt.json").write_text(json.dumps({
        "seed": 1, "best_epoch": 1, "best_eval_accuracy": 0.88, "model": "pruned",
        "data": {"key": "synthetic", "n_eval_examples": 200},
        "from_prompt": {"prompt": "pruned/prompt", "eval_accuracy_before": 0.85}}))
    return root


@dataclass
class Built:
    root: Path
    prompts: Path | None = None
    condensed: Path | None = None
    labels: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def full_store(tmp_path_factory) -> Built:
    """A store with every kind of result and a prompt directory."""
    base = tmp_path_factory.mktemp("report")
    root = make_store(base / "store", WIDTHS)
    y_tr, a_tr = planted(120, 1)
    y_ev, a_ev = planted(60, 2)
    y_e2, a_e2 = planted(60, 3)
    write_stats_run(root, "tr", "train", y_tr, SLOTS, a_tr, label_names=["neg", "pos"])
    write_periodic_run(root, "ev", "validation", y_ev, SLOTS, a_ev, label_names=["neg", "pos"])
    write_periodic_run(root, "ev2", "test", y_e2, SLOTS, a_e2, label_names=["neg", "pos"])
    st = open_store(root)
    predictivity(st, eval="ev", train="tr", name="P")
    predictivity(st, eval="ev", train="tr", scope="global", name="G")
    random_ranking(st, seed=0, name="R")
    correlate(st, "P,G,R", name="corr")
    activated_overlap(st, "ev,ev2", slot="prompt:1", mode="mean", name="on")
    make_mask(st, "P", 0.125, name="m")
    st.close()
    write_table(root, "transfers", "tr_ab", transfer_frame(), {"datasets": ["a", "b"]})
    write_table(root, "suppression", "sup", suppression_frame(), {"ranking": "P"})
    write_table(root, "pruning", "pr", SEARCH, {"margin": 0.02, "ranking": "P"})
    write_table(root, "pruned_eval", "pr", PRUNED_EVAL, {"ranking": "P"})
    return Built(root=root, prompts=prompt_dir(base / "prompts"), labels=y_ev,
                 condensed=condensed_dir(base / "condensed"))


@pytest.fixture
def bare_store(tmp_path) -> Path:
    """A store with one running-statistics run and nothing else."""
    root = make_store(tmp_path / "bare", WIDTHS)
    y, a = planted(20, 4)
    write_stats_run(root, "tr", "train", y, SLOTS, a)
    return root
