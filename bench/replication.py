"""Replicate the main skill-neuron findings with neurondb's public API on real data.

Papers (``../shared/seeds``): Wang et al. 2022 (skill neurons of prompt-tuned models),
Ackermann & Ohmer 2024 (skill neurons across datasets and on AdvGLUE), Su et al. 2022
(prompt transfer). Model: MiniLM (``minilm``: all-MiniLM-L6-v2, an encoder without an LM
head, so the label is read by a small head trained with the prompt, mean-pooled).

Steps (each prints its table, saves figures to ``--figs`` and JSON/CSV to ``OUT/results``):

1. prompt tuning per dataset and seed (``neurondb.tune.tune_prompt``) vs the majority class;
2. extraction with each tuned prompt (``neurondb.extract``: train split as running
   statistics, validation per token at the prompt and mask positions), predictivity ranking
   (``neurondb.query.predictivity``, per layer, mean over the seeds' prompts);
3. best single-neuron predictivity vs the prompt-tuned accuracy, with a shuffled-label null;
4. suppression of the top 1-15 % skill neurons vs random neurons (same count per layer,
   several seeds) (``neurondb.intervene.suppress``);
5. Spearman matrix of the predictivity rankings across datasets (``neurondb.query.correlate``);
6. AdvGLUE: accuracy of the clean prompt on adv_sst2/adv_qqp/adv_qnli and the correlation of
   the clean and adversarial rankings (clean training baselines), against a clean control set
   of the same size;
7. prompt transfer matrix across the datasets (``neurondb.tune.transfer.transfer``).

Run from the repository root::

    .venv/bin/python bench/replication.py                 # the default (~30 min on 2 cores)
    .venv/bin/python bench/replication.py --n-train 800 --n-eval 400 --seeds 1,2,3 --epochs 15
    .venv/bin/python bench/replication.py --resume        # reuse prompts/runs already made

The datasets are copied (a random sample, seed 0, of each split; IMDB reviews cut to their first ``--imdb-words``
words) into ``OUT/data/<name>/<split>.parquet`` so that tuning, extraction, suppression and
transfer all see exactly the same examples and split names.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = ROOT.parent / "shared" / "data"
MODEL = "minilm"
MODEL_NAMES = {"minilm": "MiniLM", "smollm2": "SmolLM2-135M"}


@dataclass(frozen=True)
class DataSpec:
    """A dataset of the replication: where its splits come from and its task type."""

    name: str
    kind: str  # sentiment | paraphrase | nli
    train: str  # file under DATA_ROOT, without .parquet
    validation: str
    task: str  # neurondb task preset (template and text fields)


DATASETS: dict[str, DataSpec] = {
    "sst2": DataSpec("sst2", "sentiment", "sst2/train", "sst2/validation", "sst2"),
    "imdb": DataSpec("imdb", "sentiment", "imdb/train", "imdb/test", "imdb"),
    "mrpc": DataSpec("mrpc", "paraphrase", "mrpc/train", "mrpc/validation", "mrpc"),
    "qqp": DataSpec("qqp", "paraphrase", "qqp/train", "qqp/heldout", "qqp"),
    "qnli": DataSpec("qnli", "nli", "qnli/train", "qnli/validation", "qnli"),
}
ADVERSARIAL: dict[str, str] = {"adv_sst2": "sst2", "adv_qqp": "qqp", "adv_qnli": "qnli"}


# --------------------------------------------------------------------------- utilities
class Timer:
    """Wall time per step, printed and kept for the summary."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.t0 = time.perf_counter()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"\n=== {name} ===", flush=True)
        t = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(time.perf_counter() - t, 1)
            print(f"--- {name}: {self.times[name]:.1f} s", flush=True)

    def total(self) -> float:
        return round(time.perf_counter() - self.t0, 1)


def md_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A GitHub markdown table (no tabulate dependency)."""
    def cell(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(float(v), floatfmt)
        return str(v)

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def show(title: str, df: pd.DataFrame, floatfmt: str = ".3f") -> None:
    print(f"\n{title}\n{md_table(df, floatfmt)}", flush=True)


def plt_module():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def majority(labels: np.ndarray) -> float:
    p = float(np.mean(labels))
    return max(p, 1.0 - p)


# --------------------------------------------------------------------------- the job
class Replication:
    """The whole job; each ``step_*`` method is one numbered step of the module docstring."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.out = Path(args.out)
        self.figs = Path(args.figs)
        self.data_dir = self.out / "data"
        self.prompt_dir = self.out / "prompts"
        self.store_path = self.out / "store"
        self.res_dir = self.out / "results"
        self.datasets = [DATASETS[d] for d in args.datasets.split(",")]
        self.adv = {a: c for a, c in ADVERSARIAL.items()
                    if c in {d.name for d in self.datasets} and not args.skip_adversarial}
        self.seeds = [int(s) for s in args.seeds.split(",")]
        self.timer = Timer()
        self.summary: dict[str, object] = {"args": vars(args)}
        self.prompts: dict[str, list[Path]] = {}
        self.model_name = MODEL_NAMES.get(args.model, args.model)

    # ----------------------------------------------------------------- set-up
    def prepare(self) -> None:
        if not self.a.resume:
            for sub in ("data", "prompts", "store", "results"):
                shutil.rmtree(self.out / sub, ignore_errors=True)
        for d in (self.data_dir, self.prompt_dir, self.res_dir, self.figs):
            d.mkdir(parents=True, exist_ok=True)
        import torch

        torch.set_num_threads(self.a.threads)
        n_tr, n_ev = self.a.n_train, self.a.n_eval
        sizes = []
        for ds in self.datasets:
            tr = self._sample(DATA_ROOT / f"{ds.train}.parquet").iloc[:n_tr]
            va_full = self._sample(DATA_ROOT / f"{ds.validation}.parquet")
            va = va_full.iloc[:n_ev]
            if ds.name == "imdb":
                tr, va = (self._cut_words(x, "text") for x in (tr, va))
            parts = {"train": tr, "validation": va}
            # labels permuted with a fixed seed: a null for the best-neuron predictivity
            sh = va.copy()
            sh["label"] = np.random.default_rng(0).permutation(va["label"].to_numpy())
            parts["shuffled"] = sh
            adv = [a for a, c in self.adv.items() if c == ds.name]
            if adv:  # a clean control set of the adversarial set's size, disjoint from val
                n_adv = len(pd.read_parquet(DATA_ROOT / f"adv_glue/{adv[0]}.parquet"))
                parts["control"] = va_full.iloc[n_ev:n_ev + n_adv]
            self._write(ds.name, parts)
            sizes.append({"dataset": ds.name, "kind": ds.kind, "train": len(tr),
                          "validation": len(va), "control": len(parts.get("control", [])),
                          "source train": ds.train, "source validation": ds.validation,
                          "majority (val)": majority(va["label"].to_numpy())})
        for a in self.adv:
            t = pd.read_parquet(DATA_ROOT / f"adv_glue/{a}.parquet")
            sh = t.copy()
            sh["label"] = np.random.default_rng(0).permutation(t["label"].to_numpy())
            self._write(a, {"validation": t, "shuffled": sh})
            sizes.append({"dataset": a, "kind": "adversarial", "train": 0,
                          "validation": len(t), "control": 0, "source train": "-",
                          "source validation": f"adv_glue/{a}",
                          "majority (val)": majority(t["label"].to_numpy())})
        self.sizes = pd.DataFrame(sizes)
        show("data (random sample, seed 0, of each source split)", self.sizes)
        self.summary["sizes"] = self.sizes.to_dict("records")

    @staticmethod
    def _sample(path: Path) -> pd.DataFrame:
        """The rows of a source split in a fixed random order (seed 0); the first n are the
        sample (some files are sorted by label, e.g. IMDB train starts with 61 positives)."""
        df = pd.read_parquet(path)
        return df.iloc[np.random.default_rng(0).permutation(len(df))].reset_index(drop=True)

    def _cut_words(self, df: pd.DataFrame, field: str) -> pd.DataFrame:
        df = df.copy()
        n = self.a.imdb_words
        df[field] = [" ".join(str(t).split()[:n]) for t in df[field]]
        return df

    def _write(self, name: str, parts: dict[str, pd.DataFrame]) -> None:
        d = self.data_dir / name
        d.mkdir(parents=True, exist_ok=True)
        for split, df in parts.items():
            df.reset_index(drop=True).to_parquet(d / f"{split}.parquet", index=False)

    def data(self, name: str) -> str:
        return str(self.data_dir / name)

    def save(self, name: str, obj: object) -> None:
        (self.res_dir / f"{name}.json").write_text(json.dumps(obj, indent=2, default=str) + "\n")

    # ----------------------------------------------------------------- step 1
    def step_tune(self) -> None:
        from neurondb.runtime.prompt import load_prompt
        from neurondb.tune import tune_prompt

        rows = []
        for ds in self.datasets:
            out = self.prompt_dir / ds.name
            dirs = [out / f"seed-{s}" for s in self.seeds]
            todo = [s for s, d in zip(self.seeds, dirs)
                    if not (self.a.resume and (d / "neurondb_prompt.json").exists())]
            t = time.perf_counter()
            if todo:
                tune_prompt(self.a.model, self.data(ds.name), out, split="train", eval_split="validation",
                            task=ds.task, prompt_tokens=self.a.prompt_tokens, seeds=todo,
                            epochs=self.a.epochs, patience=self.a.patience, pool="mean",
                            lr=self.a.lr, head_lr=self.a.lr, overwrite=True, progress=False)
            secs = time.perf_counter() - t
            self.prompts[ds.name] = dirs
            maj = float(self.sizes.set_index("dataset").loc[ds.name, "majority (val)"])
            for s, d in zip(self.seeds, dirs):
                m = load_prompt(d).meta
                rows.append({"dataset": ds.name, "seed": s, "accuracy": m["best_eval_accuracy"],
                             "majority": maj, "best_epoch": m["best_epoch"],
                             "epochs_run": m["epochs_run"], "seconds": m["seconds"]})
            print(f"{ds.name}: tuned {len(todo)} seed(s) in {secs:.0f} s", flush=True)
        self.tune = pd.DataFrame(rows)
        show("step 1: prompt-tuned validation accuracy (best epoch) vs majority class", self.tune)
        self.summary["tune"] = self.tune.to_dict("records")
        plt = plt_module()
        fig, ax = plt.subplots(figsize=(7, 3.6))
        names = [d.name for d in self.datasets]
        x = np.arange(len(names))
        w = 0.8 / len(self.seeds)
        for j, s in enumerate(self.seeds):
            acc = [float(self.tune[(self.tune.dataset == n) & (self.tune.seed == s)].accuracy.iloc[0])
                   for n in names]
            ax.bar(x + (j - (len(self.seeds) - 1) / 2) * w, acc, w, label=f"seed {s}")
        maj = [float(self.sizes.set_index("dataset").loc[n, "majority (val)"]) for n in names]
        ax.scatter(x, maj, marker="_", s=900, color="k", zorder=3, label="majority class")
        ax.set_xticks(x, names)
        ax.set_ylim(0.4, 1.0)
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"{self.model_name} prompt tuning (P={self.a.prompt_tokens}, {self.a.n_train} train, "
                     f"{self.a.n_eval} val)")
        ax.legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        fig.savefig(self.figs / "tuning_accuracy.png", dpi=120)
        plt.close(fig)

    # ----------------------------------------------------------------- step 2
    def _runs(self) -> dict[str, object]:
        import neurondb

        st = neurondb.open(self.store_path)
        runs = {r.run: r for r in st.runs()}
        st.close()
        return runs

    def _extract(self, data: str, split: str, task: str, prompt: Path, run: str,
                 stats: bool) -> None:
        import neurondb

        if self.store_path.exists() and run in self._runs():
            if self.a.resume:
                return
        neurondb.extract(self.a.model, data, self.store_path, split=split, task=task,
                         prompt=str(prompt), positions=self.a.positions,
                         stats_split="train" if stats else None, run=run,
                         batch_size=self.a.batch_size, dtype=self.a.dtype, progress=False)

    def stats_run(self, ds: str, seed: int) -> str:
        runs = self._runs()
        name = next((r for r in runs if r.startswith(f"{ds}-s{seed}-train")), None)
        if name is None:
            raise RuntimeError(f"no training statistics run for {ds} seed {seed}")
        return name

    def step_extract(self) -> None:
        t = {}
        for ds in self.datasets:
            t0 = time.perf_counter()
            for s, p in zip(self.seeds, self.prompts[ds.name]):
                self._extract(self.data(ds.name), "validation", ds.task, p, f"{ds.name}-s{s}", True)
            # shuffled-label null (first seed only) and the clean control of the adv sets
            self._extract(self.data(ds.name), "shuffled", ds.task, self.prompts[ds.name][0],
                          f"{ds.name}-shuffled-s{self.seeds[0]}", False)
            if any(c == ds.name for c in self.adv.values()):
                for s, p in zip(self.seeds, self.prompts[ds.name]):
                    self._extract(self.data(ds.name), "control", ds.task, p,
                                  f"{ds.name}-control-s{s}", False)
            t[ds.name] = round(time.perf_counter() - t0, 1)
        for a, c in self.adv.items():
            t0 = time.perf_counter()
            for s, p in zip(self.seeds, self.prompts[c]):
                self._extract(self.data(a), "validation", DATASETS[c].task, p, f"{a}-s{s}", False)
            self._extract(self.data(a), "shuffled", DATASETS[c].task, self.prompts[c][0],
                          f"{a}-shuffled-s{self.seeds[0]}", False)
            t[a] = round(time.perf_counter() - t0, 1)
        runs = self._runs()
        rows = [{"run": r.run, "split": r.split, "mode": r.mode, "examples": r.n_examples,
                 "tokens": r.n_tokens, "accuracy": r.accuracy, "seconds": round(r.seconds, 1)}
                for r in runs.values()]
        self.runs_df = pd.DataFrame(rows).sort_values("run").reset_index(drop=True)
        show("step 2: runs in the store", self.runs_df)
        self.summary["runs"] = self.runs_df.to_dict("records")
        self.summary["extract_seconds"] = t
        size = sum(f.stat().st_size for f in self.store_path.rglob("*") if f.is_file())
        self.summary["store_mb"] = round(size / 2**20, 1)
        print(f"store: {self.store_path} ({size / 2**20:.0f} MB)")

    def _rank(self, name: str, evals: list[str], trains: list[str]) -> pd.DataFrame:
        from neurondb.query import predictivity

        return predictivity(self.store_path, eval=evals, train=trains, slots=self.a.slots,
                            name=name, overwrite=True, threads=self.a.threads)

    def step_rank(self) -> None:
        self.rank: dict[str, pd.DataFrame] = {}
        for ds in self.datasets:
            trains = [self.stats_run(ds.name, s) for s in self.seeds]
            self.rank[ds.name] = self._rank(f"skill_{ds.name}",
                                            [f"{ds.name}-s{s}" for s in self.seeds], trains)
            for s, tr in zip(self.seeds, trains):
                self.rank[f"{ds.name}_s{s}"] = self._rank(f"skill_{ds.name}_s{s}",
                                                          [f"{ds.name}-s{s}"], [tr])
            self.rank[f"{ds.name}_null"] = self._rank(
                f"null_{ds.name}", [f"{ds.name}-shuffled-s{self.seeds[0]}"], trains[:1])
            if any(c == ds.name for c in self.adv.values()):
                self.rank[f"{ds.name}_control"] = self._rank(
                    f"skill_{ds.name}_control", [f"{ds.name}-control-s{s}" for s in self.seeds],
                    trains)
        for a, c in self.adv.items():
            trains = [self.stats_run(c, s) for s in self.seeds]
            self.rank[a] = self._rank(f"skill_{a}", [f"{a}-s{s}" for s in self.seeds], trains)
            self.rank[f"{a}_null"] = self._rank(f"null_{a}", [f"{a}-shuffled-s{self.seeds[0]}"],
                                                trains[:1])
        rows = []
        for ds in self.datasets:
            r = self.rank[ds.name]
            top = r.sort_values("score", ascending=False).iloc[0]
            rows.append({"dataset": ds.name, "best neuron": f"L{top.layer}/{top.neuron}",
                         "predictivity": top.score, "slot": top.slot,
                         "excitatory": bool(top.excitatory),
                         "top-1% mean": float(r[r["rank"] <= r.groupby("layer").neuron
                                                .transform(lambda x: max(1, round(0.01 * len(x))))]
                                              .score.mean()),
                         "median": float(r.score.median())})
        df = pd.DataFrame(rows)
        show("step 2: predictivity rankings (per layer, mean over the seeds' prompts)", df)
        self.summary["rank"] = df.to_dict("records")
        # where the predictive neurons are: max and top-1% mean per layer
        lay = []
        for ds in self.datasets:
            r = self.rank[ds.name]
            for layer, g in r.groupby("layer"):
                lay.append({"dataset": ds.name, "layer": int(layer), "max": float(g.score.max()),
                            "top1%": float(g.nlargest(max(1, round(0.01 * len(g))), "score")
                                           .score.mean())})
        self.layers = pd.DataFrame(lay)
        piv = self.layers.pivot(index="dataset", columns="layer", values="max").reset_index()
        piv.columns = ["dataset"] + [f"L{c}" for c in piv.columns[1:]]
        show("step 2: highest predictivity per layer", piv)
        self.summary["layers"] = self.layers.to_dict("records")
        plt = plt_module()
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for ds in self.datasets:
            g = self.layers[self.layers.dataset == ds.name]
            ax.plot(g.layer, g["top1%"], marker="o", label=ds.name)
        ax.set_xlabel("layer")
        ax.set_ylabel("mean predictivity of the top 1% neurons")
        ax.set_title(f"Where the skill neurons are ({self.model_name}, slots {self.a.slots})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.figs / "predictivity_by_layer.png", dpi=120)
        plt.close(fig)

    # ----------------------------------------------------------------- step 3
    def step_best_vs_accuracy(self) -> None:
        rows = []
        for ds in self.datasets:
            r = self.rank[ds.name]
            per_seed = np.stack(r["per_prompt"].to_numpy())  # [neurons, seeds]
            acc = self.tune[self.tune.dataset == ds.name].set_index("seed").accuracy
            runs = self.runs_df.set_index("run")
            ex_acc = [float(runs.loc[f"{ds.name}-s{s}", "accuracy"]) for s in self.seeds]
            rows.append({
                "dataset": ds.name,
                "model acc (mean)": float(acc.mean()),
                "extract acc (mean)": float(np.mean(ex_acc)),
                "best neuron (mean over prompts)": float(r.score.max()),
                **{f"best neuron seed {s}": float(per_seed[:, j].max())
                   for j, s in enumerate(self.seeds)},
                f"null best (shuffled, seed {self.seeds[0]})":
                    float(self.rank[f"{ds.name}_null"].score.max()),
                "majority": float(self.sizes.set_index("dataset").loc[ds.name, "majority (val)"]),
            })
        for a in self.adv:
            runs = self.runs_df.set_index("run")
            ex_acc = [float(runs.loc[f"{a}-s{s}", "accuracy"]) for s in self.seeds]
            per_seed = np.stack(self.rank[a]["per_prompt"].to_numpy())
            rows.append({"dataset": a, "model acc (mean)": float(np.mean(ex_acc)),
                         "extract acc (mean)": float(np.mean(ex_acc)),
                         "best neuron (mean over prompts)": float(self.rank[a].score.max()),
                         **{f"best neuron seed {s}": float(per_seed[:, j].max())
                            for j, s in enumerate(self.seeds)},
                         f"null best (shuffled, seed {self.seeds[0]})":
                             float(self.rank[f"{a}_null"].score.max()),
                         "majority": float(self.sizes.set_index("dataset")
                                           .loc[a, "majority (val)"])})
        self.best = pd.DataFrame(rows)
        show("step 3: best single-neuron predictivity vs the prompt-tuned model's accuracy",
             self.best)
        self.summary["best_vs_accuracy"] = self.best.to_dict("records")
        plt = plt_module()
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        x = np.arange(len(self.best))
        cols = [("extract acc (mean)", "model accuracy"),
                ("best neuron (mean over prompts)", "best neuron predictivity"),
                (f"null best (shuffled, seed {self.seeds[0]})", "best neuron, shuffled labels")]
        for j, (c, lab) in enumerate(cols):
            ax.bar(x + (j - 1) * 0.27, self.best[c], 0.27, label=lab)
        ax.scatter(x, self.best["majority"], marker="_", s=700, color="k", zorder=3,
                   label="majority class")
        ax.set_xticks(x, self.best.dataset, rotation=20)
        ax.set_ylim(0.4, 1.0)
        ax.set_title("Do the most predictive neurons reach the model's accuracy?")
        ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        fig.savefig(self.figs / "best_neuron_vs_accuracy.png", dpi=120)
        plt.close(fig)

    # ----------------------------------------------------------------- step 4
    def step_suppress(self) -> None:
        try:
            from neurondb.intervene.suppress import suppress
        except ImportError as e:
            print(f"suppression skipped: neurondb.intervene.suppress is not importable ({e})")
            self.summary["suppress"] = None
            return
        frames = []
        for ds in self.datasets:
            name = f"suppress_{ds.name}"
            path = self.store_path / "results" / "suppression" / f"{name}.parquet"
            if self.a.resume and path.exists():
                frames.append(pd.read_parquet(path).assign(dataset=ds.name))
                continue
            t = time.perf_counter()
            res = suppress(self.a.model, self.data(ds.name), prompt=self.prompts[ds.name][0],
                           split="validation", store=self.store_path, ranking=f"skill_{ds.name}",
                           rates=self.a.rates, mode=self.a.mode, seeds=self.a.suppress_seeds,
                           task=ds.task, batch_size=self.a.batch_size, name=name,
                           png=self.figs / f"suppress_{ds.name}.png", overwrite=True,
                           progress=False)
            print(f"{ds.name}: {len(res.table)} evaluations in {time.perf_counter() - t:.0f} s")
            frames.append(res.table.assign(dataset=ds.name))
        tab = pd.concat(frames, ignore_index=True)
        tab.to_csv(self.res_dir / "suppression.csv", index=False)
        rows = []
        for ds in self.datasets:
            g = tab[tab.dataset == ds.name]
            base = float(g[g.selection == "none"].accuracy.iloc[0])
            for rate, h in g[g.selection != "none"].groupby("rate"):
                rnd = h[h.selection == "random"].accuracy
                rows.append({"dataset": ds.name, "rate %": round(100 * rate, 1),
                             "neurons": int(h.n_neurons.iloc[0]), "none": base,
                             "skill": float(h[h.selection == "skill"].accuracy.iloc[0]),
                             "random mean": float(rnd.mean()), "random min": float(rnd.min()),
                             "random max": float(rnd.max())})
        self.supp = pd.DataFrame(rows)
        self.supp["skill < random min"] = self.supp["skill"] < self.supp["random min"]
        show(f"step 4: suppression ({self.a.mode}) of the top skill neurons vs random "
             f"({self.a.suppress_seeds} seeds), prompt seed {self.seeds[0]}", self.supp)
        self.summary["suppress"] = self.supp.to_dict("records")
        plt = plt_module()
        n = len(self.datasets)
        fig, axes = plt.subplots(1, n, figsize=(max(3.0 * n, 5.5), 3.2), sharey=True)
        for ax, ds in zip(np.atleast_1d(axes), self.datasets):
            g = self.supp[self.supp.dataset == ds.name]
            ax.plot(g["rate %"], g["skill"], "o-", color="C3", label="skill neurons")
            ax.plot(g["rate %"], g["random mean"], "s-", color="C0", label="random (mean)")
            ax.fill_between(g["rate %"], g["random min"], g["random max"], color="C0",
                            alpha=0.2, label="random (min-max)")
            ax.axhline(float(g["none"].iloc[0]), color="k", lw=0.8, ls="--", label="no suppression")
            ax.axhline(float(self.sizes.set_index("dataset").loc[ds.name, "majority (val)"]),
                       color="grey", lw=0.8, ls=":", label="majority class")
            ax.set_title(ds.name)
            ax.set_xlabel("suppressed neurons (%)")
        np.atleast_1d(axes)[0].set_ylabel("accuracy")
        np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower left")
        fig.suptitle(f"Suppression ({self.a.mode}) of skill vs random neurons, {self.model_name}")
        fig.tight_layout()
        fig.savefig(self.figs / "suppression.png", dpi=120)
        plt.close(fig)

    # ----------------------------------------------------------------- step 5
    def step_correlate(self) -> None:
        from neurondb.query import compare_rankings, correlate

        names = [f"skill_{d.name}" for d in self.datasets] + [f"skill_{a}" for a in self.adv]
        res = correlate(self.store_path, names, fraction=0.05, name="corr_datasets",
                        png=self.figs / "spearman_datasets.png", overwrite=True)
        short = {n: n.removeprefix("skill_") for n in names}
        m = res.matrix.rename(index=short, columns=short)
        show("step 5: Spearman rho between predictivity rankings (mean over layers)",
             m.reset_index(names="ranking"), ".2f")
        o = res.overlap.rename(index=short, columns=short)
        show("step 5: top-5% overlap per layer (mean over layers)", o.reset_index(names="ranking"),
             ".2f")
        kinds = {d.name: d.kind for d in self.datasets}
        same, diff = [], []
        clean = [d.name for d in self.datasets]
        for i, a in enumerate(clean):
            for b in clean[i + 1:]:
                (same if kinds[a] == kinds[b] else diff).append(float(m.loc[a, b]))
        seed_rho = []
        for d in clean:
            if len(self.seeds) > 1:
                t = compare_rankings(self.store_path, f"skill_{d}_s{self.seeds[0]}",
                                     f"skill_{d}_s{self.seeds[1]}")
                seed_rho.append({"dataset": d, "rho seed vs seed": float(t.spearman.mean())})
        seed_df = pd.DataFrame(seed_rho)
        if len(seed_df):
            show("step 5: the same dataset, two prompts (seed vs seed)", seed_df)
        groups = pd.DataFrame([
            {"pairs": "same task type", "n": len(same), "mean rho": np.mean(same) if same else np.nan},
            {"pairs": "different task type", "n": len(diff),
             "mean rho": np.mean(diff) if diff else np.nan}])
        # control: the same comparison between shuffled-label rankings (no task signal left;
        # what remains comes from the activations' distribution and the label balance)
        nulls = [f"null_{d}" for d in clean]
        nres = correlate(self.store_path, nulls, fraction=0.05, name="corr_nulls",
                         png=self.figs / "spearman_nulls.png", overwrite=True)
        nm = nres.matrix.rename(index=lambda x: x.removeprefix("null_"),
                                columns=lambda x: x.removeprefix("null_"))
        no = nres.overlap.rename(index=lambda x: x.removeprefix("null_"),
                                 columns=lambda x: x.removeprefix("null_"))
        show("step 5 control: Spearman rho between shuffled-label rankings", nm.reset_index(
            names="ranking"), ".2f")
        show("step 5 control: top-5% overlap between shuffled-label rankings", no.reset_index(
            names="ranking"), ".2f")
        nsame, ndiff = [], []
        for i, a in enumerate(clean):
            for b in clean[i + 1:]:
                (nsame if kinds[a] == kinds[b] else ndiff).append(float(nm.loc[a, b]))
        groups["mean rho, shuffled labels"] = [np.mean(nsame) if nsame else np.nan,
                                               np.mean(ndiff) if ndiff else np.nan]
        show("step 5: same vs different task type (clean datasets)", groups)
        self.summary["spearman_nulls"] = nm.round(4).to_dict()
        self.summary["topk_overlap_nulls"] = no.round(4).to_dict()
        per_layer = res.table[(res.table.a.isin(names[:len(clean)]))
                              & (res.table.b.isin(names[:len(clean)]))]
        per_layer.to_csv(self.res_dir / "spearman_per_layer.csv", index=False)
        self.summary["spearman"] = m.round(4).to_dict()
        self.summary["topk_overlap"] = o.round(4).to_dict()
        self.summary["spearman_groups"] = groups.to_dict("records")
        self.summary["spearman_seed_vs_seed"] = seed_df.to_dict("records")
        self.corr = m

    # ----------------------------------------------------------------- step 6
    def step_adversarial(self) -> None:
        if not self.adv:
            return
        from neurondb.query import compare_rankings

        runs = self.runs_df.set_index("run")
        rows = []
        for a, c in self.adv.items():
            clean = [float(runs.loc[f"{c}-s{s}", "accuracy"]) for s in self.seeds]
            ctrl = [float(runs.loc[f"{c}-control-s{s}", "accuracy"]) for s in self.seeds]
            adv = [float(runs.loc[f"{a}-s{s}", "accuracy"]) for s in self.seeds]
            t_adv = compare_rankings(self.store_path, f"skill_{c}", f"skill_{a}")
            t_ctl = compare_rankings(self.store_path, f"skill_{c}", f"skill_{c}_control")
            rows.append({
                "adv set": a, "n adv": int(runs.loc[f"{a}-s{self.seeds[0]}", "examples"]),
                "clean acc": float(np.mean(clean)), "control acc": float(np.mean(ctrl)),
                "adv acc": float(np.mean(adv)), "adv acc per seed": ", ".join(f"{x:.3f}" for x in adv),
                "adv majority": float(self.sizes.set_index("dataset").loc[a, "majority (val)"]),
                "rho clean vs adv": float(t_adv.spearman.mean()),
                "max p (adv, per layer)": float(t_adv.p_value.max()),
                "rho clean vs control": float(t_ctl.spearman.mean()),
                "top5% overlap clean/adv": float(t_adv.topk_overlap.mean()),
                "top5% overlap clean/control": float(t_ctl.topk_overlap.mean()),
            })
        self.advdf = pd.DataFrame(rows)
        show("step 6: AdvGLUE with the clean prompts (baselines: clean training statistics)",
             self.advdf)
        self.summary["adversarial"] = self.advdf.to_dict("records")
        plt = plt_module()
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
        x = np.arange(len(self.advdf))
        for j, (col, lab) in enumerate([("clean acc", "clean val"), ("control acc", "clean control"),
                                        ("adv acc", "AdvGLUE")]):
            ax1.bar(x + (j - 1) * 0.27, self.advdf[col], 0.27, label=lab)
        ax1.scatter(x, self.advdf["adv majority"], marker="_", s=700, color="k", zorder=3,
                    label="adv majority")
        ax1.set_xticks(x, self.advdf["adv set"])
        ax1.set_ylim(0.0, 1.0)
        ax1.set_ylabel("accuracy")
        ax1.legend(fontsize=7)
        ax1.set_title("accuracy of the clean prompts")
        ax2.bar(x - 0.2, self.advdf["rho clean vs control"], 0.4, label="clean vs clean control")
        ax2.bar(x + 0.2, self.advdf["rho clean vs adv"], 0.4, label="clean vs adversarial")
        ax2.set_xticks(x, self.advdf["adv set"])
        ax2.set_ylabel("Spearman rho (mean over layers)")
        ax2.legend(fontsize=7)
        ax2.set_title("predictivity rankings")
        fig.tight_layout()
        fig.savefig(self.figs / "adversarial.png", dpi=120)
        plt.close(fig)

    # ----------------------------------------------------------------- step 7
    def step_transfer(self) -> None:
        from neurondb.tune.transfer import transfer, transfer_matrix

        csv = self.res_dir / "transfer.csv"
        if self.a.resume and csv.exists():
            df = pd.read_csv(csv)
        else:
            prompts = [p for d in self.datasets for p in self.prompts[d.name]]
            targets = [(self.data(d.name), "validation") for d in self.datasets]
            df = transfer(prompts, targets, self.a.model, max_examples=self.a.transfer_examples,
                          batch_size=self.a.batch_size, png=self.figs / "transfer_relative.png",
                          csv=csv, progress=False)
        rel = transfer_matrix(df, "relative")
        acc = transfer_matrix(df, "accuracy")
        ren = {c: c.split(":")[0] for c in rel.columns}
        rel, acc = rel.rename(columns=ren), acc.rename(columns=ren)
        order = [d.name for d in self.datasets]
        rel, acc = rel.loc[order, order], acc.loc[order, order]
        show("step 7: transfer, relative accuracy % (rows: source prompt, columns: target)",
             rel.reset_index(names="source"), ".1f")
        show("step 7: transfer, absolute accuracy", acc.reset_index(names="source"))
        kinds = {d.name: d.kind for d in self.datasets}
        same = [rel.loc[a, b] for a in order for b in order if a != b and kinds[a] == kinds[b]]
        diff = [rel.loc[a, b] for a in order for b in order if kinds[a] != kinds[b]]
        g = pd.DataFrame([{"pairs": "same task type", "n": len(same), "mean relative %": np.mean(same)},
                          {"pairs": "different task type", "n": len(diff),
                           "mean relative %": np.mean(diff)}])
        show("step 7: transfer within vs across task types", g, ".1f")
        self.summary["transfer_relative"] = rel.round(2).to_dict()
        self.summary["transfer_accuracy"] = acc.round(4).to_dict()
        self.summary["transfer_groups"] = g.to_dict("records")
        from neurondb.query.plots import heatmap

        heatmap(acc, self.figs / "transfer_accuracy.png",
                title="transfer: absolute accuracy (rows: source prompt)", vmin=0.3, vmax=1.0)

    # ----------------------------------------------------------------- run
    def run(self) -> None:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("0 data", self.prepare), ("1 tune", self.step_tune),
            ("2a extract", self.step_extract), ("2b rank", self.step_rank),
            ("3 best neuron vs accuracy", self.step_best_vs_accuracy),
            ("4 suppression", self.step_suppress), ("5 spearman", self.step_correlate),
            ("6 adversarial", self.step_adversarial), ("7 transfer", self.step_transfer)]
        skip = set(filter(None, self.a.skip.split(",")))
        for name, fn in steps:
            if name.split()[0] in skip:
                print(f"\n=== {name}: skipped (--skip) ===")
                continue
            with self.timer.step(name):
                fn()
            self.summary["timings_s"] = dict(self.timer.times)
            self.save("summary", self.summary)
        self.summary["total_s"] = self.timer.total()
        self.save("summary", self.summary)
        show("wall time per step (s)", pd.DataFrame(
            [{"step": k, "seconds": v} for k, v in self.timer.times.items()]
            + [{"step": "total", "seconds": self.summary["total_s"]}]), ".1f")
        print(f"\nresults: {self.res_dir}/summary.json; figures: {self.figs}/*.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "bench" / "replication_out"),
                   help="working directory (data copies, prompts, store, results)")
    p.add_argument("--figs", default=str(ROOT / "bench" / "replication_figs"), help="PNG figures")
    p.add_argument("--model", default=MODEL, help="model: minilm (a head reads the label, "
                   "mean-pooled), smollm2 (causal LM: the verbalizer's next token), or any name "
                   "neurondb loads")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma list of " + ",".join(DATASETS))
    p.add_argument("--n-train", type=int, default=400, help="training examples per dataset")
    p.add_argument("--n-eval", type=int, default=200, help="validation examples per dataset")
    p.add_argument("--imdb-words", type=int, default=80, help="IMDB reviews are cut to this many words")
    p.add_argument("--seeds", default="1,2", help="prompt-tuning seeds (one prompt each)")
    p.add_argument("--prompt-tokens", type=int, default=20)
    p.add_argument("--epochs", type=int, default=5, help="most epochs of prompt tuning")
    p.add_argument("--patience", type=int, default=2, help="early stopping patience (epochs)")
    p.add_argument("--lr", type=float, default=0.01, help="AdamW step of the prompt and the head")
    p.add_argument("--positions", default="prompt,mask", help="positions extracted")
    p.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32"],
                   help="storage dtype (default: neurondb's, float32 for prompt,mask)")
    p.add_argument("--slots", default="prompt:*", help="slots the predictivity uses (the papers: "
                   "the prompt tokens)")
    p.add_argument("--rates", default="1,3,5,10,15", help="suppression rates, percent")
    p.add_argument("--mode", default="zero", choices=["zero", "mean", "noise"],
                   help="suppression: zero (Ackermann & Ohmer), mean, noise (Wang et al.)")
    p.add_argument("--suppress-seeds", type=int, default=3, help="random controls per rate")
    p.add_argument("--transfer-examples", type=int, default=None,
                   help="examples per transfer target (default: all --n-eval)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch and kernel threads (1: the 2 cores are "
                   "shared; under load 1 thread ran faster than 2)")
    p.add_argument("--skip", default="", help="steps to skip, by number, e.g. 4,7")
    p.add_argument("--skip-adversarial", action="store_true", help="no AdvGLUE sets")
    p.add_argument("--resume", action="store_true", help="reuse the prompts, runs, suppression "
                   "and transfer results already in --out (default: start afresh)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"neurondb replication: {' '.join(sys.argv[1:]) or '(defaults)'}", flush=True)
    Replication(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
