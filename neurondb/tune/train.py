"""Prompt tuning (Lester et al. 2021; SPEC §7): ``P`` trainable vectors prepended to the
input embeddings of a frozen model, trained with cross-entropy over the label logits.

The label is read through a verbalizer (masked LM at the ``<mask>``, causal LM at the next
token, T5 at the first decoder step), through a sequence-classification head the model
already has (frozen), or — for an encoder without an LM head, such as MiniLM — through a
small linear head ``[C, d_model]`` trained with the prompt and saved with it. Every forward
runs ``neurondb.runtime.forward`` (via :mod:`neurondb.runtime.reader`), so what is trained is
exactly what ``neurondb extract --prompt`` computes.

Defaults (``neurondb.tune.defaults``): AdamW, prompt learning rate 0.01 (``lr``), head
learning rate 0.01 (``head_lr``), no weight decay, gradient norm clipped at 1, batch 16, at
most 30 epochs with early stopping after 5 epochs without a better validation accuracy; the
prompt of the best validation epoch is kept (ties: lower validation loss). On MiniLM +
movie_reviews (P=20, 512 training and 400 validation sentences, 2 CPU cores) the defaults
reach 0.74 validation accuracy with ``pool="mask"`` and 0.76-0.78 with ``pool="mean"``
(MiniLM's own pooling), about 2 minutes per seed; prompt learning rates 0.001-0.3 learned
slower in a short sweep. Lester et al. used Adafactor
at lr 0.3, whose steps scale with the parameter's RMS; Adam's per-coordinate steps of that
size swamp BERT-scale embeddings (std ~0.05). The model stays in eval mode (dropout off), so
training and extraction compute the same function.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurondb.errors import arg, given, on_cli, switch
from neurondb.runtime.batches import iter_batches
from neurondb.runtime.data import LoadedData, check_distinct_splits, check_max_examples, load_data
from neurondb.runtime.evaluate import Evaluation, evaluate
from neurondb.runtime.model import LoadedModel, auto_strategy_for, frozen, model_for
from neurondb.runtime.naming import data_key
from neurondb.runtime.progress import TrainProgress
from neurondb.runtime.prompt import SoftPrompt
from neurondb.runtime.reader import POOLS, LabelReader, batch_logits, check_labels, make_readout
from neurondb.runtime.readouts import get_readout, head_readout
from neurondb.runtime.templates import resolve_labels
from neurondb.store.manifest import model_fingerprint
from neurondb.tune import defaults
from neurondb.tune.curve import CURVE_CSV, CURVE_PNG, EpochRecord, plot_curve, write_curve_csv
from neurondb.tune.errors import TuneError
from neurondb.tune.peft_io import INITS, init_prompt, write_peft_adapter

DEFAULT_LR = defaults.LR
DEFAULT_HEAD_LR = defaults.HEAD_LR
DEFAULT_EPOCHS = defaults.EPOCHS
DEFAULT_BATCH_SIZE = defaults.BATCH_SIZE
DEFAULT_PATIENCE = defaults.PATIENCE


@dataclass(frozen=True)
class TuneRequest:
    """Every input of a tuning job, validated once and never changed; the CLI flags and the
    keyword arguments of :func:`tune_prompt` map one to one onto these fields.

    ``model``: a name, a path or a loaded ``PreTrainedModel`` (with ``tokenizer``; used as
    it is). ``data``: a name, a path or a DataFrame / Arrow table / ``datasets.Dataset``.
    ``prompt_tokens``: P. ``lr``/``head_lr``: AdamW step sizes for the prompt and the head.
    ``patience``: epochs without a better validation accuracy before stopping (0: never stop
    early). ``eval_split=None``: no validation; the last epoch's prompt is kept.
    """

    model: Any
    data: Any
    out: str | Path
    tokenizer: Any = None
    split: str = "train"
    eval_split: str | None = "validation"
    data_config: str | None = None
    text_fields: list[str] | None = None
    label_field: str = "label"
    template: str | None = None
    verbalizer: list[str] | None = None
    task: str | None = None
    readout: str = "auto"
    prompt_tokens: int = 100
    seeds: tuple[int, ...] = (1, 2, 3)
    lr: float = DEFAULT_LR
    head_lr: float = DEFAULT_HEAD_LR
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    eval_batch_size: int = 32
    max_examples: int | None = None
    max_eval_examples: int | None = None
    max_length: int | None = None
    patience: int = DEFAULT_PATIENCE
    init: str = "vocab"
    pool: str = "mask"
    device: str = "auto"
    overwrite: bool = False
    peft_adapter: bool = True
    progress: bool = True
    from_prompt: str | Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(x) for x in self.seeds))

    @property
    def model_label(self) -> str:
        """The model's name or path, or the loaded object's ``config._name_or_path``."""
        if isinstance(self.model, (str, Path)):
            return str(self.model)
        cfg = getattr(self.model, "config", None)
        return str(getattr(cfg, "_name_or_path", "") or type(self.model).__name__)

    @property
    def data_label(self) -> str | None:
        """The data's name or path; None for data given in memory."""
        return str(self.data) if isinstance(self.data, (str, Path)) else None


#: the name the first API had
TuneConfig = TuneRequest


@dataclass
class TunedPrompt:
    """One seed's result: the kept prompt (with its meta), the curve, and the kept prompt's
    evaluation on the validation split (None without one)."""

    seed: int
    prompt: SoftPrompt
    records: list[EpochRecord]
    best_epoch: int
    evaluation: Evaluation | None
    seconds: float


def seed_dir(out: str | Path, seed: int) -> Path:
    """Directory of one seed's prompt: ``OUT/seed-<k>``."""
    return Path(out) / f"seed-{seed}"


def _abs_if_local(name: str) -> str:
    p = Path(name)
    return str(p.resolve()) if p.exists() else name


def _check_out(cfg: TuneConfig) -> None:
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise TuneError(f"{given('out', str(out))} is a file; give a directory for the seed "
                        "prompts")
    taken = [seed_dir(out, s) for s in cfg.seeds if seed_dir(out, s).exists()]
    if taken and not cfg.overwrite:
        raise TuneError(f"{taken[0]} already exists; pass {switch('overwrite')} to replace it "
                        f"or choose another {arg('out')}")


def _resolved(req: TuneConfig, start: SoftPrompt | None) -> TuneConfig:
    """``req`` with what a starting prompt fixes (knowledge condensation: re-tune the prompt
    of the full model on its pruned export): its length, pool, text token limit and text
    fields. Its template, verbalizer and readout come in through ``resolve_labels``."""
    if start is None:
        return req
    dmeta = start.meta.get("data") or {}
    return replace(req, prompt_tokens=start.n_tokens, pool=start.pool,
                   max_length=(req.max_length if req.max_length is not None
                               else start.max_length),
                   text_fields=req.text_fields or dmeta.get("text_fields"))


def _check_hparams(cfg: TuneConfig) -> None:
    checks = [
        (cfg.prompt_tokens >= 1,
         f"{arg('prompt_tokens')} must be at least 1, not {cfg.prompt_tokens}"),
        (cfg.epochs >= 1, f"{arg('epochs')} must be at least 1, not {cfg.epochs}"),
        (cfg.batch_size >= 1 and cfg.eval_batch_size >= 1,
         "--batch-size must be at least 1" if on_cli()
         else "batch_size and eval_batch_size must be at least 1"),
        (cfg.lr > 0 and cfg.head_lr > 0, f"{arg('lr')} and {arg('head_lr')} must be positive"),
        (cfg.patience >= 0, f"{arg('patience')} must be 0 (no early stopping) or more"),
        (cfg.init in INITS, f"{arg('init')} must be one of {', '.join(INITS)}, not {cfg.init!r}"),
        (cfg.pool in POOLS, f"{arg('pool')} must be one of {', '.join(POOLS)}, not {cfg.pool!r}"),
        (len(cfg.seeds) > 0, f"{arg('seeds')} needs at least one seed"),
        (len(set(cfg.seeds)) == len(cfg.seeds),
         f"{arg('seeds')} repeats a seed: {list(cfg.seeds)}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise TuneError(msg)


@dataclass
class _Trainables:
    """What one seed trains: the prompt ``[P, d_model]``, an optional head, the optimizer,
    and ``live``, the :class:`SoftPrompt` view of them that the forward pass reads."""

    prompt: torch.nn.Parameter
    head_w: torch.nn.Parameter | None
    head_b: torch.nn.Parameter | None
    opt: torch.optim.Optimizer
    params: list
    live: SoftPrompt

    @classmethod
    def start(cls, tuner: PromptTuner, cfg: TuneRequest) -> _Trainables:
        lm, start, dev = tuner.lm, tuner.start, tuner.lm.device
        first = (start.embeddings.detach().clone().float() if start is not None
                 else init_prompt(lm, cfg.prompt_tokens, cfg.init))
        prompt = torch.nn.Parameter(first.to(dev))
        groups: list[dict] = [{"params": [prompt], "lr": cfg.lr}]
        head_w = head_b = None
        if lm.strategy.uses_head:
            lin = torch.nn.Linear(tuner.d_hidden, tuner.readout.n_classes)
            w0 = start.head_weight if start is not None else lin.weight
            b0 = (start.head_bias if start is not None and start.head_bias is not None
                  else lin.bias)
            head_w = torch.nn.Parameter(w0.detach().clone().float().to(dev))
            head_b = torch.nn.Parameter(b0.detach().clone().float().to(dev))
            groups.append({"params": [head_w, head_b], "lr": cfg.head_lr})
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        live = SoftPrompt(embeddings=prompt, meta={"pool": cfg.pool}, head_weight=head_w,
                          head_bias=head_b)
        return cls(prompt, head_w, head_b, opt, [p for g in groups for p in g["params"]], live)


@dataclass
class _Best:
    """The best epoch so far: its score (validation accuracy, then lower loss), epoch,
    evaluation, and a copy of its prompt and head."""

    score: tuple[float, float]
    epoch: int
    evaluation: Evaluation | None
    tensors: tuple

    @staticmethod
    def key(ev: Evaluation | None) -> tuple[float, float]:
        return (ev.accuracy, -ev.loss) if ev else (0.0, 0.0)

    @classmethod
    def of(cls, tr: _Trainables, epoch: int, ev: Evaluation | None) -> _Best:
        copies = tuple(None if t is None else t.detach().clone()
                       for t in (tr.prompt, tr.head_w, tr.head_b))
        return cls(cls.key(ev), epoch, ev, copies)

    def prompt(self) -> SoftPrompt:
        emb, hw, hb = self.tensors
        return SoftPrompt(embeddings=emb.cpu(), head_weight=None if hw is None else hw.cpu(),
                          head_bias=None if hb is None else hb.cpu())


class PromptTuner:
    """A validated tuning job: model, data and readout are loaded once, then each seed is
    trained with :meth:`train` and written with :meth:`save` (or all at once with :meth:`run`)."""

    def __init__(self, req: TuneConfig):
        self.request = req
        _check_hparams(req)
        _check_out(req)
        self.start: SoftPrompt | None = None
        if req.from_prompt is not None:
            from neurondb.runtime.prompt import load_prompt

            self.start = load_prompt(req.from_prompt)
        #: the request with what the starting prompt fixes filled in (the request is kept)
        self.cfg = cfg = _resolved(req, self.start)
        spec = resolve_labels(cfg.data_label, task=cfg.task, template=cfg.template,
                              verbalizer=cfg.verbalizer, readout=cfg.readout,
                              prompt_meta=self.start.meta if self.start else None,
                              prompt_has_head=bool(self.start and self.start.has_head))
        self.task = spec.task
        readout = spec.readout
        if readout == "auto":  # an encoder without an LM head is tuned with a head
            s = auto_strategy_for(cfg.model)
            readout = s.name if s.gives_logits else head_readout().name
        if not get_readout(readout).gives_logits:
            raise TuneError(f"{given('readout', readout)} gives no labels to tune on; use auto "
                            "or head")
        check_max_examples(cfg.max_eval_examples, "max_eval_examples")
        self.train_data = self._load(cfg.split, cfg.max_examples)
        if cfg.eval_split:
            check_distinct_splits(cfg.data, cfg.split, cfg.eval_split, arg("eval_split"))
        n_eval = cfg.max_examples if cfg.max_eval_examples is None else cfg.max_eval_examples
        self.eval_data = self._load(cfg.eval_split, n_eval) if cfg.eval_split else None
        self.lm: LoadedModel = model_for(cfg.model, cfg.tokenizer, readout=readout,
                                         device=cfg.device)
        self.readout: LabelReader = self._label_reader(spec)
        self.d_model = int(self.lm.model.get_input_embeddings().weight.shape[1])
        if self.start is not None and self.start.d_model != self.d_model:
            raise TuneError(f"{given('from_prompt', str(self.start.source))} has width "
                            f"{self.start.d_model} but {self.lm.name} embeds in {self.d_model}: "
                            "it was made for another model")
        cfg_m = self.lm.model.config
        self.d_hidden = int(getattr(cfg_m, "hidden_size", None) or getattr(cfg_m, "d_model", None)
                            or self.d_model)
        self.fingerprint = model_fingerprint(self.lm.model)

    def _label_reader(self, spec) -> LabelReader:
        """The readout of the loaded model; a head gets one row per label seen."""
        cfg, s = self.cfg, self.lm.strategy
        n_head = None
        if s.uses_head:
            tops = [int(d.labels.max()) + 1 for d in (self.train_data, self.eval_data)
                    if d is not None and len(d)]
            n_head = max([len(self.train_data.label_names), *tops])
        reader = make_readout(self.lm, spec.template, spec.verbalizer, cfg.prompt_tokens,
                              n_head_classes=n_head, pool=cfg.pool, max_length=cfg.max_length)
        what = "verbalizer" if reader.verb_ids else f"{s.name} readout"
        check_labels(self.train_data, reader.n_classes, what, min_classes=2)
        if self.eval_data is not None:
            check_labels(self.eval_data, reader.n_classes, what)
        return reader

    def _load(self, split: str, max_examples: int | None) -> LoadedData:
        c = self.cfg
        return load_data(c.data, split, c.data_config, c.text_fields, c.label_field, max_examples,
                         self.task)

    # -- training ---------------------------------------------------------------------------
    def train(self, seed: int, rep: TrainProgress | None = None) -> TunedPrompt:
        """Tune one prompt from ``seed`` (initial prompt, head and batch order all follow it).
        The model runs frozen in evaluation mode and is left as it was given."""
        with frozen(self.lm):
            return self._train(seed, rep or TrainProgress(False))

    def _train(self, seed: int, rep: TrainProgress) -> TunedPrompt:
        cfg = self.cfg
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        tr = _Trainables.start(self, cfg)
        self.initial_evaluation = None
        best: _Best | None = None
        if self.start is not None and self.eval_data is not None:
            # accuracy before re-tuning (condensation: the full model's prompt on this
            # model); the starting prompt competes as epoch 0, so re-tuning never returns a
            # prompt that scores worse on the validation split than the one it started from
            self.initial_evaluation = self._validate(tr)
            best = _Best.of(tr, 0, self.initial_evaluation)
        rng = np.random.default_rng(seed)
        steps = math.ceil(len(self.train_data) / cfg.batch_size)
        task = rep.task(f"seed {seed}", total=steps * cfg.epochs)
        records: list[EpochRecord] = []
        stale = 0
        for epoch in range(1, cfg.epochs + 1):
            te = time.perf_counter()
            loss, acc = self._epoch(tr, rng.permutation(len(self.train_data)), epoch, rep, task)
            ev = self._validate(tr) if self.eval_data is not None else None
            records.append(EpochRecord(epoch=epoch, train_loss=loss, train_accuracy=acc,
                                       eval_loss=ev.loss if ev else None,
                                       eval_accuracy=ev.accuracy if ev else None,
                                       seconds=round(time.perf_counter() - te, 3)))
            if best is None or ev is None or _Best.key(ev) > best.score:
                best, stale = _Best.of(tr, epoch, ev), 0
            else:
                stale += 1
            if ev is not None:
                rep.update(task, 0, val=best.score[0])
            if cfg.patience and ev is not None and stale >= cfg.patience:
                rep.update(task, 0, total=steps * epoch)
                break
        tp = best.prompt()
        seconds = time.perf_counter() - t0
        tp.meta = self._meta(seed, best.epoch, records, best.evaluation, seconds)
        return TunedPrompt(seed=seed, prompt=tp, records=records, best_epoch=best.epoch,
                           evaluation=best.evaluation, seconds=seconds)

    def _validate(self, tr: _Trainables) -> Evaluation:
        return evaluate(self.lm, tr.live, self.eval_data, readout=self.readout,
                        batch_size=self.cfg.eval_batch_size, check_model=False)

    def _epoch(self, tr: _Trainables, order: np.ndarray, epoch: int, rep: TrainProgress,
               task: int) -> tuple[float, float]:
        """One pass over the training split in ``order``; returns the mean cross-entropy
        (nats) and the accuracy of the batches as they were trained."""
        cfg, data, dev = self.cfg, self.train_data, self.lm.device
        labels = torch.as_tensor(data.labels)
        loss_sum = correct = seen = 0.0
        for ids, batch in iter_batches(self.readout.encoder, data.texts, order, cfg.batch_size):
            y = labels[ids].to(dev)
            with torch.enable_grad():
                logits = batch_logits(self.lm, self.readout, batch, tr.live)
                loss = torch.nn.functional.cross_entropy(logits, y)
                tr.opt.zero_grad(set_to_none=True)
                loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(tr.params, cfg.max_grad_norm)
            tr.opt.step()
            loss_sum += float(loss.detach()) * len(ids)
            correct += float((logits.detach().argmax(-1) == y).sum())
            seen += len(ids)
            rep.update(task, 1, epoch=epoch, loss=loss_sum / seen, acc=correct / seen)
        return loss_sum / len(data), correct / len(data)

    def _meta(self, seed: int, best_epoch: int, records: list[EpochRecord],
              ev: Evaluation | None, seconds: float) -> dict:
        cfg, lm, ro = self.cfg, self.lm, self.readout
        tr, va = self.train_data, self.eval_data
        labels = list(tr.label_names) + [str(i) for i in range(len(tr.label_names), ro.n_classes)]
        meta = {
            "kind": "neurondb-tuned-prompt",
            "model": cfg.model_label, "model_path": _abs_if_local(lm.name),
            "model_class": type(lm.model).__name__,
            "model_fingerprint": self.fingerprint, "d_model": self.d_model,
            "template": ro.template.source, "verbalizer": ro.verbalizer or None,
            "readout": lm.readout,
            "labels": labels[:ro.n_classes], "n_classes": ro.n_classes, "task": self.task,
            "seed": seed, "best_epoch": best_epoch, "epochs_run": len(records),
            "best_eval_accuracy": ev.accuracy if ev else None,
            "best_eval_loss": ev.loss if ev else None,
            "final_train_loss": records[-1].train_loss, "first_train_loss": records[0].train_loss,
            "seconds": round(seconds, 3),
            "hparams": {"prompt_tokens": cfg.prompt_tokens, "optimizer": "AdamW", "lr": cfg.lr,
                        "head_lr": cfg.head_lr if lm.strategy.uses_head else None,
                        "weight_decay": cfg.weight_decay, "max_grad_norm": cfg.max_grad_norm,
                        "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                        "patience": cfg.patience, "init": cfg.init,
                        "max_examples": cfg.max_examples, "max_length": ro.encoder.max_length,
                        "device": str(lm.device)},
            "data": {"source": cfg.data_label or tr.name,
                     "key": data_key(cfg.data_label or tr.fingerprint, cfg.data_config),
                     "name": tr.name,
                     "config": tr.config, "split": tr.split, "fingerprint": tr.fingerprint,
                     "n_examples": len(tr), "eval_split": va.split if va else None,
                     "eval_fingerprint": va.fingerprint if va else None,
                     "n_eval_examples": len(va) if va else 0, "text_fields": tr.text_fields,
                     "label_field": tr.label_field},
        }
        if lm.strategy.uses_head:
            meta["pool"] = cfg.pool  # where the head reads (SoftPrompt.pool)
        if self.start is not None:
            ini = getattr(self, "initial_evaluation", None)
            meta["from_prompt"] = {"prompt": str(self.start.source),
                                   "sha256": self.start.sha256,
                                   "model": self.start.meta.get("model"),
                                   "eval_accuracy_before": ini.accuracy if ini else None,
                                   "eval_loss_before": ini.loss if ini else None}
        return meta

    # -- writing ----------------------------------------------------------------------------
    def save(self, tuned: TunedPrompt, directory: str | Path | None = None) -> Path:
        """Write one seed's directory atomically: the neurondb prompt files, a PEFT adapter
        (verbalizer/classifier readouts), ``curve.csv`` and ``curve.png``."""
        final = Path(directory) if directory is not None else seed_dir(self.cfg.out, tuned.seed)
        if final.exists() and not self.cfg.overwrite:
            raise TuneError(f"{final} already exists; pass {switch('overwrite')} to replace it")
        tmp = final.parent / f".{final.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tuned.prompt.save(tmp)
            if self.cfg.peft_adapter and not self.lm.strategy.uses_head:
                write_peft_adapter(tmp, self.lm, tuned.prompt.embeddings, self.cfg.init)
            write_curve_csv(tuned.records, tmp / CURVE_CSV)
            acc = tuned.prompt.meta.get("best_eval_accuracy")
            title = (f"{Path(self.cfg.model_label).name} on "
                     f"{Path(self.cfg.data_label or self.train_data.name).name}, P="
                     f"{self.cfg.prompt_tokens}, seed {tuned.seed}"
                     + (f": validation accuracy {acc:.3f}" if acc is not None else ""))
            plot_curve(tuned.records, tmp / CURVE_PNG, title=title, best_epoch=tuned.best_epoch)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tuned.prompt.source = str(final)
        return final

    def run(self) -> list[Path]:
        """Train and save every seed; returns the seed directories in seed order."""
        rep = TrainProgress(self.cfg.progress, unit="steps")
        ro = self.readout
        rep.info(f"tuning {self.cfg.prompt_tokens} prompt tokens on {self.cfg.model_label} "
                 f"(readout {self.lm.readout}, {ro.n_classes} classes, device {self.lm.device}); "
                 f"{len(self.train_data)} {self.train_data.split} examples"
                 + (f", {len(self.eval_data)} {self.eval_data.split}" if self.eval_data else ""))
        va = self.eval_data
        if va is not None and va.fingerprint == self.train_data.fingerprint \
                and va.split != self.train_data.split:
            rep.info(f"warning: {self.cfg.data} gives the same examples for {va.split!r} as for "
                     f"{self.train_data.split!r} (a single file?); validation is training data")
        out: list[Path] = []
        try:
            Path(self.cfg.out).mkdir(parents=True, exist_ok=True)
            for seed in self.cfg.seeds:
                tuned = self.train(seed, rep)
                out.append(self.save(tuned))
                acc = tuned.prompt.meta["best_eval_accuracy"]
                before = (tuned.prompt.meta.get("from_prompt") or {}).get("eval_accuracy_before")
                kept = (f"kept the starting prompt (no epoch of {len(tuned.records)} beat it)"
                        if tuned.best_epoch == 0 else
                        f"kept epoch {tuned.best_epoch} of {len(tuned.records)}")
                rep.info(f"seed {seed}: {kept}"
                         + (f", validation accuracy {before:.4f} before re-tuning"
                            if before is not None else "")
                         + (f", validation accuracy {acc:.4f}" if acc is not None else "")
                         + f", {tuned.seconds:.1f} s -> {out[-1]}")
        finally:
            rep.close()
        return out


def tune_prompt(model, data, out: str | Path, **kwargs) -> list[Path]:
    """Tune one soft prompt per seed on ``data`` for the frozen ``model``; write each to
    ``OUT/seed-<k>/`` (a directory ``neurondb extract --prompt`` reads) and return them.

    ``model``: a name, a path or a loaded model (``tokenizer=``; used as it is, not
    reloaded). Keyword arguments are the fields of :class:`TuneRequest`: ``readout="auto"``
    reads the label as the model's head allows, with a trained linear head for an encoder
    without one; ``init``: ``vocab`` or ``random``; ``pool`` (head readout): ``mask``,
    ``first`` or ``mean``; ``eval_split=None`` keeps the last epoch instead of the best
    validation one. ``from_prompt``: start from this tuned prompt (and head) instead of a
    fresh one — knowledge condensation when ``model`` is a pruned export of the prompt's
    model; its accuracy before re-tuning is recorded in the meta
    (``from_prompt.eval_accuracy_before``).
    """
    return PromptTuner(TuneRequest(model=model, data=data, out=out, **kwargs)).run()
