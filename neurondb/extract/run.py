"""``neurondb.extract``: run a model over a dataset and record FFN neurons into a store."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from neurondb.extract.capture import FFNCapture
from neurondb.extract.data import LoadedData, load_data
from neurondb.extract.encode import Encoder, parse_positions, resolve_positions
from neurondb.extract.errors import ExtractError
from neurondb.extract.forward import GRAD_TARGETS, label_logits, model_inputs, target_value
from neurondb.extract.model import LoadedModel, load_config, load_model, verbalizer_ids
from neurondb.extract.progress import Reporter
from neurondb.extract.prompt import SoftPrompt, load_prompt
from neurondb.extract.templates import PRESETS, Template
from neurondb.store.codec import check_dtype, encode, numpy_storage_dtype
from neurondb.store.layout import MANIFEST, RUNS_DIR, check_run_name, free_bytes
from neurondb.store.manifest import Manifest, ModelIdentity, library_versions, model_fingerprint
from neurondb.store.reader import Store
from neurondb.store.run import RunInfo, RunWriter

DISK_MARGIN = 64 << 20


@dataclass
class ExtractConfig:
    """Everything an extraction needs; the CLI flags map one to one onto these fields."""

    model: str
    data: str
    out: str | Path
    split: str = "validation"
    data_config: str | None = None
    text_fields: list[str] | None = None
    label_field: str | None = "label"
    template: str | None = None
    verbalizer: list[str] | None = None
    task: str | None = None
    readout: str = "auto"
    prompt: str | None = None
    positions: list[str] | str | None = None
    stats_split: str | None = None
    grad: bool = False
    grad_target: str = "gold"
    dtype: str = "float16"
    model_dtype: str | None = None
    max_examples: int | None = None
    batch_size: int = 32
    max_length: int | None = None
    device: str = "auto"
    run: str | None = None
    overwrite: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)


def _task_for(cfg: ExtractConfig) -> str | None:
    if cfg.task:
        if cfg.task not in PRESETS:
            raise ExtractError(f"unknown --task {cfg.task!r}; presets: {', '.join(PRESETS)}")
        return cfg.task
    p = Path(cfg.data)
    for cand in (cfg.data, p.name, p.stem, p.parent.name):
        if cand in PRESETS:
            return cand
    return None


def _data_tag(data: str) -> str:
    """A short run-name stem for a dataset: directory name, file stem or hub name."""
    p = Path(data)
    stem = p.name if p.is_dir() else (p.stem if p.is_file() else data.split("/")[-1])
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in stem) or "data"


def _check_out_dir(out: Path) -> bool:
    """True when ``out`` already holds a store; an error for a non-empty non-store dir."""
    if (out / MANIFEST).exists():
        return True
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExtractError(f"--out {out} exists and is not a neurondb store; choose a new directory")
    return False


def _label_check(data: LoadedData, n_classes: int, what: str) -> None:
    if len(data) == 0:
        raise ExtractError(f"the {data.split!r} split of {data.name} is empty (after "
                           "--max-examples); give data with examples")
    lab = data.labels[data.labels >= 0]
    if lab.size and n_classes and lab.max() >= n_classes:
        raise ExtractError(f"labels go up to {int(lab.max())} but the {what} covers "
                           f"{n_classes} classes; give one --verbalizer word per label")


class _Extraction:
    """One extraction job: validated inputs, then one or two runs written into the store."""

    def __init__(self, cfg: ExtractConfig):
        self.cfg = cfg
        check_dtype(cfg.dtype)
        if cfg.grad_target not in GRAD_TARGETS:
            raise ExtractError(f"--grad-target must be one of {', '.join(GRAD_TARGETS)}")
        if cfg.batch_size < 1:
            raise ExtractError("--batch-size must be at least 1")
        self.positions = parse_positions(cfg.positions)
        self.out = Path(cfg.out)
        self.existing = _check_out_dir(self.out)
        self.task = _task_for(cfg)
        preset = PRESETS.get(self.task) if self.task else None
        load_config(cfg.model)  # fails fast (before any data) for a bad model name
        from neurondb.arch import adapter_for
        from neurondb.arch.adapter import UnsupportedModelError

        try:
            adapter_for(load_config(cfg.model))
        except UnsupportedModelError as e:
            raise ExtractError(str(e)) from e
        self.prompt: SoftPrompt | None = load_prompt(cfg.prompt) if cfg.prompt else None
        tmpl = cfg.template or (self.prompt.meta.get("template") if self.prompt else None) \
            or (preset.template if preset else None)
        self.template = Template(tmpl or "{text}")
        verb = cfg.verbalizer or (self.prompt.meta.get("verbalizer") if self.prompt else None) \
            or (list(preset.verbalizer) if preset else None)
        need_labels = cfg.readout != "none" or cfg.grad
        self.data = load_data(cfg.data, cfg.split, cfg.data_config, cfg.text_fields,
                              cfg.label_field, cfg.max_examples, self.task,
                              require_labels=need_labels)
        self.stats_data = None
        if cfg.stats_split:
            self.stats_data = load_data(cfg.data, cfg.stats_split, cfg.data_config,
                                        cfg.text_fields, cfg.label_field, cfg.max_examples,
                                        self.task, require_labels=need_labels)
        has_head = bool(self.prompt and self.prompt.has_head)
        self.lm: LoadedModel = load_model(cfg.model, cfg.readout, cfg.device, cfg.model_dtype,
                                          has_head=has_head)
        r = self.lm.readout
        if r == "head" and not has_head:
            raise ExtractError("--readout head needs a --prompt directory that holds a head "
                               "(made by `neurondb tune`)")
        if r == "mlm" and not self.template.has_mask:
            raise ExtractError(f"template {self.template.source!r} has no {{mask}} slot, which a "
                               "masked-LM readout needs; add {mask} (e.g. '{text} It was {mask}.')")
        self.verb_words: list[str] = list(verb or [])
        self.verb_ids: list[int] | None = None
        n_classes = 0
        if r in ("mlm", "causal", "seq2seq"):
            if not self.verb_words:
                raise ExtractError(f"readout {r!r} needs a verbalizer: pass --verbalizer "
                                   "word0,word1,... (one per label) or --task")
            self.verb_ids = verbalizer_ids(self.lm.tokenizer, self.verb_words)
            n_classes = len(self.verb_ids)
        elif r == "classifier":
            n_classes = int(self.lm.model.config.num_labels)
        elif r == "head":
            n_classes = int(self.prompt.head_weight.shape[0])
        what = "verbalizer" if self.verb_ids else f"{r} readout"
        for d in (self.data, self.stats_data):
            if d is not None:
                _label_check(d, n_classes, what)
        self.shape = self.lm.adapter.shape(self.lm.model)
        P = self.prompt.n_tokens if self.prompt else 0
        if self.prompt and self.prompt.d_model != self.shape.d_model:
            raise ExtractError(f"the prompt has width {self.prompt.d_model} but the model's "
                               f"d_model is {self.shape.d_model}: it was made for another model")
        max_pos = getattr(self.lm.model.config, "max_position_embeddings", None) or 100000
        tok_max = getattr(self.lm.tokenizer, "model_max_length", 512) or 512
        self.max_length = min(cfg.max_length or 512, tok_max, max_pos - P)
        if self.max_length < 8:
            raise ExtractError(f"the soft prompt ({P} tokens) leaves no room in the model's "
                               f"{max_pos} positions")
        self.encoder = Encoder(self.lm.tokenizer, self.template, r, P, self.max_length)
        has_readout_pos = r in ("mlm", "causal") or self.encoder.mask_id is not None
        self.positions = resolve_positions(self.positions, P, has_readout_pos)
        if cfg.grad and r == "none":
            raise ExtractError("--grad needs a readout with label logits (not --readout none)")
        if cfg.grad and (self.data.labels < 0).any() and cfg.grad_target != "pred":
            raise ExtractError("--grad with the gold target needs labels; use --grad-target pred")
        self.identity = ModelIdentity(
            name=cfg.model, revision=self.lm.revision,
            fingerprint=model_fingerprint(self.lm.model), shape=self.shape,
            model_class=type(self.lm.model).__name__,
            dtype=str(next(self.lm.model.parameters()).dtype).replace("torch.", ""))
        if self.existing:
            self._check_existing()
        tag = self.task or _data_tag(cfg.data)
        suffix = f"-p{self.prompt.sha256[:8]}" if self.prompt else ""
        self.run_name = check_run_name(cfg.run or f"{tag}-{cfg.split}{suffix}")
        self.stats_run = None
        if cfg.stats_split:
            name = f"{cfg.run or tag}-{cfg.stats_split}{suffix}"
            self.stats_run = check_run_name(name + "-stats" if name == self.run_name else name)
        for name in (self.run_name, self.stats_run):
            if name and (self.out / RUNS_DIR / name).exists() and not cfg.overwrite:
                raise ExtractError(f"run {name!r} already exists in {self.out}; pass --overwrite "
                                   "or --run NAME")

    def _check_existing(self) -> None:
        m = Manifest.read(self.out)
        if m.model.fingerprint != self.identity.fingerprint:
            raise ExtractError(f"{self.out} holds a store of another model ({m.model.name}, "
                               f"fingerprint {m.model.fingerprint[:12]}); use a new --out")

    # -- size -------------------------------------------------------------------------
    def expected_rows(self, lengths: np.ndarray) -> dict[str, int]:
        P = self.encoder.n_prompt
        n = len(lengths)
        if "all" in self.positions:
            enc_rows = int(lengths.sum()) + n * P
        else:
            per = (P if "prompt" in self.positions else 0) + sum(
                1 for k in ("mask", "first", "last") if k in self.positions)
            enc_rows = n * per
        rows = {self.shape.stacks[0]: enc_rows}
        if self.lm.is_seq2seq:
            rows["decoder"] = n
        return rows

    def estimate_bytes(self, lengths: np.ndarray) -> int:
        item = numpy_storage_dtype(self.cfg.dtype).itemsize
        rows = self.expected_rows(lengths)
        total = sum(r * sum(self.shape.widths[s]) * item for s, r in rows.items())
        total *= 2 if self.cfg.grad else 1
        return int(total + 200 * len(lengths) + 64 * int(lengths.sum()))

    def estimate_stats_bytes(self) -> int:
        P = self.encoder.n_prompt + 4
        C = max(1, len(self.data.label_names))
        return int(sum(sum(w) for w in self.shape.widths.values()) * P * 8 * (2 + C))

    # -- running ------------------------------------------------------------------------
    def run(self) -> Store:
        rep = Reporter(self.cfg.progress)
        lengths = self.encoder.lengths(self.data.texts)
        stats_lengths = self.encoder.lengths(self.stats_data.texts) if self.stats_data else None
        need = self.estimate_bytes(lengths) + (self.estimate_stats_bytes() if self.stats_data else 0)
        free = free_bytes(self.out)
        rep.info(f"model {self.cfg.model} ({self.shape.family}, "
                 f"{', '.join(f'{s}: {len(w)} layers x {w[0]}' for s, w in self.shape.widths.items())}),"
                 f" readout {self.lm.readout}, device {self.lm.device}")
        rep.info(f"capturing {', '.join(self.positions)} of {len(self.data)} {self.data.split} "
                 f"examples{' with gradients' if self.cfg.grad else ''}; estimated store size "
                 f"{need / 1e6:,.1f} MB ({free / 1e9:,.1f} GB free)")
        if need + DISK_MARGIN > free:
            raise ExtractError(f"not enough disk for {self.out}: the store needs about "
                               f"{need / 1e9:.2f} GB and {free / 1e9:.2f} GB are free; free space, "
                               "lower --max-examples, capture fewer --positions or use --dtype float16")
        created = not self.out.exists()
        writers: list[RunWriter] = []
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            if not self.existing:
                Manifest(model=self.identity, libraries=library_versions()).write(self.out)
            jobs = [(self.data, lengths, "tokens", self.run_name)]
            if self.stats_data is not None:
                jobs.append((self.stats_data, stats_lengths, "stats", self.stats_run))
            for data, lens, mode, name in jobs:
                w = RunWriter(self.out, self._info(data, mode, name), self.shape.widths,
                              self.expected_rows(lens))
                writers.append(w)
                self._capture(data, lens, w, rep)
                w.commit()
                writers.remove(w)
        except BaseException:
            for w in writers:
                w.abort()
            if created:
                shutil.rmtree(self.out, ignore_errors=True)
            raise
        finally:
            rep.close()
        return Store([self.out])

    def _info(self, data: LoadedData, mode: str, name: str) -> RunInfo:
        return RunInfo(
            run=name, split=data.split, mode=mode, dataset=data.name,
            dataset_config=data.config, dataset_fingerprint=data.fingerprint,
            text_fields=data.text_fields, label_field=data.label_field,
            labels=data.label_names, template=self.template.source, readout=self.lm.readout,
            verbalizer=self.verb_words, prompt=self.prompt.source if self.prompt else None,
            prompt_hash=self.prompt.sha256 if self.prompt else None,
            n_prompt=self.encoder.n_prompt, positions=self.positions,
            grad=self.cfg.grad and mode == "tokens",
            grad_target=self.cfg.grad_target if self.cfg.grad else None,
            dtype=self.cfg.dtype, max_length=self.max_length, n_examples=len(data))

    def _capture(self, data: LoadedData, lengths: np.ndarray, w: RunWriter, rep: Reporter) -> None:
        lm, enc, cfg = self.lm, self.encoder, self.cfg
        info = w.info
        grad = info.grad
        in_stack = self.shape.stacks[0]
        order = np.argsort(-lengths, kind="stable")
        rows_done = dict.fromkeys(self.shape.stacks, 0)
        n_correct = n_labelled = n_tokens = 0
        t0 = time.perf_counter()
        task = rep.task(f"{info.run}", total=len(data))
        with FFNCapture(lm.model, lm.adapter, grad=grad) as cap:
            for start in range(0, len(order), cfg.batch_size):
                ids = order[start:start + cfg.batch_size]
                batch = enc.encode(ids, [data.texts[i] for i in ids])
                sel = enc.select(batch, self.positions)
                B = len(ids)
                dev = lm.device
                cap.clear()
                cap.select(in_stack, torch.as_tensor(sel.b, device=dev),
                           torch.as_tensor(sel.t, device=dev))
                if lm.is_seq2seq:
                    cap.select("decoder", torch.arange(B, device=dev),
                               torch.zeros(B, dtype=torch.long, device=dev))
                labels = data.labels[ids]
                ctx = torch.enable_grad() if grad else torch.inference_mode()
                with ctx:
                    out = lm.model(**model_inputs(lm, batch, self.prompt, need_embeds=grad))
                    logits = label_logits(lm, out, batch, self.verb_ids, self.prompt)
                    if grad:
                        tgt = torch.as_tensor(labels, device=dev)
                        target_value(logits, tgt, cfg.grad_target).sum().backward()
                pred = (logits.argmax(-1).cpu().numpy() if logits is not None
                        else np.full(B, -1, dtype=np.int64))
                correct = (pred == labels) & (labels >= 0)
                scored = (labels >= 0) & (logits is not None)
                n_correct += int(correct.sum())
                n_labelled += int((labels >= 0).sum()) if logits is not None else 0
                n_tokens += int(batch.lengths.sum()) + B * enc.n_prompt
                w.write_examples(pa.table({
                    "run": [info.run] * B, "split": [info.split] * B,
                    "example_id": ids.astype(np.int64), "idx": data.idx[ids],
                    "text": batch.texts, "label": labels, "pred": pred,
                    "correct": pa.array(correct, mask=~scored), "n_tokens": (batch.lengths + enc.n_prompt).astype(np.int32),
                    "label_logits": (pa.array(list(logits.detach().cpu().numpy()),
                                              pa.list_(pa.float32()))
                                     if logits is not None else pa.nulls(B, pa.list_(pa.float32()))),
                }))
                sels = {in_stack: (sel.b, sel.t, sel.slots)}
                if lm.is_seq2seq:
                    sels["decoder"] = (np.arange(B), np.zeros(B, dtype=np.int64),
                                       ["dec:0"] * B)
                if info.mode == "tokens":
                    w.write_tokens(self._tokens_table(info.run, batch, ids))
                    for stack, (b, t, slots) in sels.items():
                        n = len(b)
                        w.write_rows(pa.table({
                            "run": [info.run] * n, "stack": [stack] * n,
                            "row": np.arange(rows_done[stack], rows_done[stack] + n),
                            "example_id": ids[b].astype(np.int64),
                            "position": t.astype(np.int32), "slot": slots}))
                        rows_done[stack] += n
                    for key, x in cap.acts.items():
                        w.append("activations", key[0], key[1], encode(x, info.dtype))
                    if grad:
                        for key, g in cap.grads.items():
                            w.append("gradients", key[0], key[1], encode(g, info.dtype))
                else:
                    st = w.stats
                    for stack, (b, _t, slots) in sels.items():
                        sid = st.slot_ids(stack, slots)
                        lab = labels[b]
                        st.update_counts(stack, sid, lab)
                        for layer in range(len(self.shape.widths[stack])):
                            x = cap.acts[(stack, layer)].float().cpu().numpy()
                            st.update(stack, layer, sid, lab, x)
                        rows_done[stack] += len(b)
                rep.advance(task, B, int(batch.lengths.sum()) + B * enc.n_prompt)
        info.n_tokens = n_tokens
        info.n_rows = rows_done
        info.accuracy = (n_correct / n_labelled) if n_labelled else None
        info.seconds = round(time.perf_counter() - t0, 3)
        acc = f", accuracy {info.accuracy:.4f}" if info.accuracy is not None else ""
        rep.info(f"run {info.run}: {len(data)} examples, {sum(rows_done.values())} rows "
                 f"({info.mode}){acc}, {info.seconds:.1f} s")

    def _tokens_table(self, run: str, batch, ids: np.ndarray) -> pa.Table:
        tok = self.lm.tokenizer
        P = self.encoder.n_prompt
        cols: dict[str, list] = {k: [] for k in ("run", "example_id", "stack", "position",
                                                 "token_id", "token", "kind")}
        in_stack = self.shape.stacks[0]
        ids_arr = batch.enc["input_ids"].numpy()
        for i, ex in enumerate(ids):
            n = int(batch.lengths[i])
            tid = ids_arr[i, :n].tolist()
            toks = tok.convert_ids_to_tokens(tid)
            kinds = self.encoder.token_kinds(tid)
            cols["run"].extend([run] * (P + n))
            cols["example_id"].extend([int(ex)] * (P + n))
            cols["stack"].extend([in_stack] * (P + n))
            cols["position"].extend(range(P + n))
            cols["token_id"].extend([-1] * P + tid)
            cols["token"].extend([f"<prompt:{j}>" for j in range(P)] + toks)
            cols["kind"].extend(["prompt"] * P + kinds)
            if self.lm.is_seq2seq:
                start = self.lm.model.config.decoder_start_token_id or 0
                for k, v in (("run", run), ("example_id", int(ex)), ("stack", "decoder"),
                             ("position", 0), ("token_id", int(start)),
                             ("token", tok.convert_ids_to_tokens(int(start))), ("kind", "special")):
                    cols[k].append(v)
        return pa.table(cols)


def extract(model: str, data: str, out: str | Path, **kwargs) -> Store:
    """Run ``model`` over ``data`` and record FFN neurons into the store ``out``.

    Keyword arguments are the fields of :class:`ExtractConfig` (split, text_fields,
    label_field, template, verbalizer, task, readout, prompt, positions, stats_split, grad,
    grad_target, dtype, max_examples, batch_size, max_length, device, run, overwrite,
    progress). Returns the opened :class:`~neurondb.store.reader.Store`. On any error the
    store is left as it was (a new store directory is removed).
    """
    cfg = ExtractConfig(model=model, data=data, out=out, **kwargs)
    with contextlib.ExitStack():
        return _Extraction(cfg).run()
