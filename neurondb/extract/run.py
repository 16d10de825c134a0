"""``neurondb.extract``: run a model over a dataset and record FFN neurons into a store.

Concurrency: an extraction holds the writer lock of every run it writes (``run_lock``) for its
whole duration, so a second writer of the same run is refused at once with the holder named;
different runs of one store extract at the same time. Creating or checking the manifest and
beginning a run happen under the store lock, so two processes creating the same new store
agree on one manifest. On an error an extraction removes only what it created itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from neurondb.errors import arg, given, switch
from neurondb.extract import profiling as profile_seam
from neurondb.extract.dist import Dist
from neurondb.extract.errors import ExtractError
from neurondb.extract.request import ExtractConfig, ExtractRequest  # noqa: F401
from neurondb.extract.size import chunk_order, extraction_sizes
from neurondb.extract.tokens import TokensTableBuilder
from neurondb.extract.writer import BackgroundWriter, HostCopy, write_fault
from neurondb.runtime.batches import iter_batches
from neurondb.runtime.data import LoadedData, check_distinct_splits, load_data, require_examples
from neurondb.runtime.encode import parse_positions, resolve_positions
from neurondb.runtime.forward import decoder_start_id, label_logits, model_inputs, target_value
from neurondb.runtime.hooks import FFNCapture
from neurondb.runtime.model import LoadedModel, frozen, load_config, model_for
from neurondb.runtime.progress import Reporter
from neurondb.runtime.prompt import SoftPrompt, load_prompt
from neurondb.runtime.reader import prompt_readout
from neurondb.runtime.readouts import may_give_logits
from neurondb.runtime.templates import resolve_labels
from neurondb.store import catalog, locks
from neurondb.store.codec import check_dtype, default_storage_dtype
from neurondb.store.io import leftover_pid, os_errors, remove_dead_leftovers
from neurondb.store.layout import MANIFEST, RUN_JSON, RUNS_DIR, check_run_name, free_bytes
from neurondb.store.manifest import Manifest, ModelIdentity, library_versions, model_fingerprint
from neurondb.store.reader import Store
from neurondb.store.run import (
    RunInfo,
    ShardWriter,
    begin_run,
    completed_chunks,
    finalize_run,
    remove_partials,
)

DISK_MARGIN = 64 << 20


def _data_tag(data: str) -> str:
    """A short run-name stem for a dataset: directory name, file stem or hub name."""
    p = Path(data)
    stem = p.name if p.is_dir() else (p.stem if p.is_file() else data.split("/")[-1])
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in stem) or "data"


def _check_model_name(name: str) -> None:
    """A model name or path that cannot be loaded, or of a family no adapter knows, is an
    error before any data is read."""
    from neurondb.arch import adapter_for
    from neurondb.arch.adapter import UnsupportedModelError

    try:
        adapter_for(load_config(name))
    except UnsupportedModelError as e:
        raise ExtractError(str(e)) from e


def _being_created(out: Path) -> bool:
    """Whether directory ``out`` (with no manifest) holds only what a store's creation leaves
    before its manifest is in: the lock folder and temporary files of a writer (one creating
    the store right now, or one killed while creating it)."""
    return all(p.name == locks.LOCKS_DIR or leftover_pid(p.name) is not None
               for p in out.iterdir())


def _check_out_dir(out: Path) -> bool:
    """True when ``out`` already holds a store; an error for a non-empty non-store dir."""
    if (out / MANIFEST).exists():
        return True
    if out.exists() and (not out.is_dir() or not _being_created(out)):
        raise ExtractError(f"{given('out', str(out))} exists and is not a neurondb store; "
                           "choose a new directory")
    return False


def _label_check(data: LoadedData, n_classes: int, what: str) -> None:
    require_examples(data)
    lab = data.labels[data.labels >= 0]
    if lab.size and n_classes and lab.max() >= n_classes:
        raise ExtractError(f"labels go up to {int(lab.max())} but the {what} covers "
                           f"{n_classes} classes; give one {arg('verbalizer')} word per label")


class Extraction:
    """One extraction job: the request resolved (model, labels, data, runs), then one or two
    runs written into the store by :meth:`run`. The request is never changed."""

    def __init__(self, req: ExtractRequest):
        self.cfg = req
        profile_seam.check_request(req)  # --profile
        self.dist = Dist.from_env()
        self.positions = parse_positions(  # --profile: every token unless told otherwise
            "all" if req.profile and req.positions is None else req.positions)
        #: storage dtype: as given, else float32 for slot-limited captures (exact predictivity)
        #: and float16 when every token is captured (docs/CONVENTIONS.md)
        self.dtype = check_dtype(req.dtype or default_storage_dtype(self.positions))
        #: --also-capture: the positions (and storage dtype) of the per-token run written in
        #: the profile run's forward pass
        self.twin_positions = (parse_positions(req.also_capture, "also_capture")
                               if req.also_capture else None)
        self.twin_dtype = (check_dtype(req.dtype or default_storage_dtype(self.twin_positions))
                           if self.twin_positions else None)
        self.out = Path(req.out)
        self._tokens: TokensTableBuilder | None = None  # made on the first batch written
        self.existing = _check_out_dir(self.out)
        if isinstance(req.model, (str, Path)):
            _check_model_name(str(req.model))  # fails fast, before any data is read
        self.prompt: SoftPrompt | None = load_prompt(req.prompt) if req.prompt else None
        self.spec = resolve_labels(req.data_label, task=req.task, template=req.template,
                                   verbalizer=req.verbalizer, readout=req.readout,
                                   prompt_meta=self.prompt.meta if self.prompt else None,
                                   prompt_has_head=bool(self.prompt and self.prompt.has_head))
        self.task = self.spec.task
        self.data, self.stats_data = self._load_splits()
        self.lm: LoadedModel = model_for(
            req.model, req.tokenizer, readout=self.spec.readout,
            device=self.dist.device(req.device), model_dtype=req.model_dtype,
            has_head=bool(self.prompt and self.prompt.has_head), device_map=req.device_map)
        self._read_labels()
        self.identity = ModelIdentity(
            name=req.model_label, revision=self.lm.revision,
            fingerprint=model_fingerprint(self.lm.model), shape=self.shape,
            model_class=type(self.lm.model).__name__,
            dtype=str(next(self.lm.model.parameters()).dtype).replace("torch.", ""))
        if self.existing:
            self._check_existing()
        self._name_runs()
        self._plan_jobs()

    def _load_splits(self) -> tuple[LoadedData, LoadedData | None]:
        """The captured split and, with ``stats_split``, the split reduced to statistics."""
        req = self.cfg
        need_labels = may_give_logits(self.spec.readout) or req.grad

        def load(split: str) -> LoadedData:
            return load_data(req.data, split, req.data_config, req.text_fields, req.label_field,
                             req.max_examples, self.task, require_labels=need_labels,
                             encoding=req.encoding, drop_missing_text=req.drop_missing_text)

        stats = None
        if req.stats_split:
            check_distinct_splits(req.data, req.split, req.stats_split, arg("stats_split"))
        data = load(req.split)
        if req.stats_split:
            stats = load(req.stats_split)
        return data, stats

    def _read_labels(self) -> None:
        """How the label is read (:func:`neurondb.runtime.reader.prompt_readout`), the encoder,
        the positions that exist, and the checks that need the loaded model."""
        req, lm, sp = self.cfg, self.lm, self.prompt
        self.shape = lm.adapter.shape(lm.model)
        if sp and sp.d_model != self.shape.d_model:
            raise ExtractError(f"the prompt has width {sp.d_model} but the model's "
                               f"d_model is {self.shape.d_model}: it was made for another model")
        reader = prompt_readout(lm, self.spec.template, self.spec.verbalizer, sp,
                                max_length=req.max_length, min_words=1, need_logits=False)
        self.template, self.encoder, self.max_length = (reader.template, reader.encoder,
                                                        reader.encoder.max_length)
        self.verb_words, self.verb_ids = reader.verbalizer, reader.verb_ids
        strategy = lm.strategy
        what = "verbalizer" if self.verb_ids else f"{strategy.name} readout"
        for d in (self.data, self.stats_data):
            if d is not None:
                _label_check(d, reader.n_classes, what)
        has_read_pos = strategy.has_read_position or self.encoder.mask_id is not None
        self.positions = resolve_positions(self.positions, self.encoder.n_prompt, has_read_pos)
        if self.twin_positions:
            self.twin_positions = resolve_positions(self.twin_positions, self.encoder.n_prompt,
                                                    has_read_pos)
            profile_seam.check_twin_positions(self.positions, self.twin_positions)
        if req.grad and not strategy.gives_logits:
            raise ExtractError(f"{switch('grad')} needs a readout with label logits (not "
                               f"{given('readout', strategy.name)})")
        if req.grad and (self.data.labels < 0).any() and req.grad_target != "pred":
            raise ExtractError(f"{switch('grad')} with the gold target needs labels; use "
                               f"{given('grad_target', 'pred')}")

    def _name_runs(self) -> None:
        """Run names: ``--run``, else ``<data>-<split>`` plus the prompt's hash. A local path
        names its data (adv_sst2 under --task sst2 is not sst2); a hub name is named by its
        task (glue + sst2 -> sst2); data in memory is ``dataframe``/``table``/``dataset``."""
        req = self.cfg
        if req.data_label is None:
            tag = self.data.name
        elif Path(req.data_label).exists():
            tag = _data_tag(req.data_label)
        else:
            tag = self.task or _data_tag(req.data_label)
        suffix = self._prompt_suffix(f"{tag}-{req.split}")
        base = f"{tag}-{req.split}{suffix}"
        self.run_name = check_run_name(req.run or base + ("-profile" if req.profile else ""))
        #: --also-capture: the per-token run beside the profile (``<base>`` or ``<run>-tokens``)
        self.twin_run = (check_run_name(f"{req.run}-tokens" if req.run else base)
                         if self.twin_positions else None)
        self.stats_run = None
        if req.stats_split:
            name = f"{req.run or tag}-{req.stats_split}{suffix}"
            self.stats_run = check_run_name(name + "-stats" if name == self.run_name else name)

    def _prompt_suffix(self, stem: str) -> str:
        """A soft prompt's part of a run name: ``-seed<k>`` for a tuned prompt (its meta names
        the seed; the prompt's sha256 is kept in the run's metadata), ``-p<sha8>`` for a
        prompt without a seed, or when ``<stem>-seed<k>`` already holds another prompt."""
        sp = self.prompt
        if sp is None:
            return ""
        seed = sp.meta.get("seed")
        if seed is None:
            return f"-p{sp.sha256[:8]}"
        readable = f"-seed{seed}"
        taken = self.out / RUNS_DIR / f"{stem}{readable}" / RUN_JSON
        if taken.exists() and not self.cfg.overwrite:
            try:
                other = json.loads(taken.read_text()).get("prompt_hash")
            except (OSError, json.JSONDecodeError):
                other = None  # damaged: the resume check names it
            if other and other != sp.sha256:
                return f"{readable}-p{sp.sha256[:8]}"
        return readable

    def _plan_jobs(self) -> None:
        """The runs still to write; a run completed by an interrupted run of the same command
        is not redone, and a store that has them all is refused."""
        main_mode = "profile" if self.cfg.profile else "tokens"
        self.jobs = [(self.data, main_mode, self.run_name)]
        if self.twin_run:  # written in the profile run's pass (see _write_runs)
            self.jobs.append((self.data, "tokens", self.twin_run))
        if self.stats_data is not None:
            self.jobs.append((self.stats_data, "stats", self.stats_run))
        states = [self._check_resume(name, self._config(data, mode))
                  for data, mode, name in self.jobs]
        if all(st == "complete" for st in states):
            names = " and ".join(repr(n) for _, _, n in self.jobs)
            raise ExtractError(f"run {names} already exists in {self.out}; pass "
                               f"{switch('overwrite')} or {given('run', 'NAME')}")
        self.jobs = [j for j, st in zip(self.jobs, states) if st != "complete"]

    def _config(self, data: LoadedData, mode: str) -> dict:
        """What must match for an interrupted run to be resumed."""
        c = self.cfg
        return {"model": c.model_label, "model_fingerprint": self.identity.fingerprint,
                "data": data.name, "data_config": data.config, "split": data.split,
                "dataset_fingerprint": data.fingerprint, "text_fields": data.text_fields,
                "label_field": data.label_field, "template": self.template.source,
                "verbalizer": self.verb_words, "readout": self.lm.readout,
                "prompt_hash": self.prompt.sha256 if self.prompt else None,
                "positions": self.positions_for(mode), "mode": mode,
                "dtype": self.dtype_for(mode),
                "grad": bool(c.grad and mode == "tokens"), "grad_target": c.grad_target,
                "max_examples": c.max_examples, "max_length": self.max_length,
                "batch_size": c.batch_size, "chunk_examples": c.chunk_examples,
                **(profile_seam.profile_config(c) if mode == "profile" else {})}

    def positions_for(self, mode: str) -> list[str]:
        """The positions a run of ``mode`` captures: a profile's per-token twin has its own."""
        return self.twin_positions if mode == "tokens" and self.twin_positions else self.positions

    def dtype_for(self, mode: str) -> str:
        """The storage dtype of a run of ``mode`` (see :meth:`positions_for`)."""
        return self.twin_dtype if mode == "tokens" and self.twin_positions else self.dtype

    def _check_resume(self, name: str, config: dict) -> str:
        """``new``, ``resume`` (interrupted, same command) or ``complete`` (same command);
        an existing run made by another command is refused, naming the difference."""
        d = self.out / RUNS_DIR / name
        if not d.exists() or self.cfg.overwrite:
            return "new"
        if not (d / RUN_JSON).exists() and not completed_chunks(self.out, name):
            return "new"  # a writer was stopped between creating the directory and run.json
        try:
            old = RunInfo.from_dict(json.loads((d / RUN_JSON).read_text()))
        except (OSError, json.JSONDecodeError):
            raise ExtractError(f"run {name!r} in {self.out} is damaged; pass "
                               f"{switch('overwrite')} to extract it again") from None
        diff = [k for k in sorted(set(config) | set(old.config))
                if config.get(k) != old.config.get(k)]
        if old.status == "complete":
            if diff:
                raise ExtractError(f"run {name!r} already exists in {self.out}; pass "
                                   f"{switch('overwrite')} or {given('run', 'NAME')}")
            if catalog.run_entry(self.out, name) is None:
                return "resume"  # stopped before its catalog entry: completing it is idempotent
            return "complete"
        if diff:
            k = diff[0]
            raise ExtractError(f"run {name!r} was started with another command ({k}: "
                               f"{old.config.get(k)!r} then, {config.get(k)!r} now"
                               f"{f'; also {len(diff) - 1} more' if len(diff) > 1 else ''}); "
                               f"re-run the same command to resume, or pass {switch('overwrite')}")
        return "resume"

    def _check_existing(self) -> None:
        m = Manifest.read(self.out)
        if m.model.fingerprint != self.identity.fingerprint:
            raise ExtractError(f"{self.out} holds a store of another model ({m.model.name}, "
                               f"fingerprint {m.model.fingerprint[:12]}); use a new {arg('out')}")

    # -- size -------------------------------------------------------------------------
    def expected_rows(self, lengths: np.ndarray, positions: list[str] | None = None
                      ) -> dict[str, int]:
        """Captured rows per stack of examples with these ``lengths`` (default: the main
        run's positions)."""
        P = self.encoder.n_prompt
        n = len(lengths)
        positions = positions or self.positions
        if "all" in positions:
            enc_rows = int(lengths.sum()) + n * P
        else:
            per = (P if "prompt" in positions else 0) + sum(
                1 for k in ("mask", "first", "last") if k in positions)
            enc_rows = n * per
        rows = {self.shape.stacks[0]: enc_rows}
        if self.lm.is_seq2seq:
            rows["decoder"] = n
        return rows

    # -- running ------------------------------------------------------------------------
    def run(self) -> Store:
        """Write (or resume) the runs; every rank calls this, rank 0 finishes the runs. The
        model runs in evaluation mode with frozen weights and is left as it was given."""
        with frozen(self.lm):
            return self._write_runs()

    def _write_runs(self) -> Store:
        rep = Reporter(self.cfg.progress and self.dist.is_main)
        dist = self.dist
        lens = [self.encoder.lengths(d.texts) for d, _, _ in self.jobs]
        notes = self._profile_notes(lens)  # --profile: checks first, then what it saves
        done = [set() if self.cfg.overwrite else completed_chunks(self.out, name)
                for _, _, name in self.jobs]
        # the dtype of the tensors written (a profile run writes none; its twin has its own)
        stored = sorted({self.dtype_for(mode) for _, mode, _ in self.jobs if mode == "tokens"})
        other = ("float32" if stored[0] != "float32" else "float16") if len(stored) == 1 else None
        sizes = extraction_sizes(self, lens, done, (None, other) if other else (None,))
        total, need = sizes[None]  # None: each run's own dtype; need: what is still to write
        as_dtype = (f" as {stored[0]} ({other}: {sizes[other][0] / 1e6:,.1f} MB)" if other
                    else f" ({' and '.join(stored)} tensors)" if stored else "")
        free = free_bytes(self.out)
        rep.info(f"model {self.cfg.model_label} ({self.shape.family}, "
                 f"{', '.join(f'{s}: {len(w)} layers x {w[0]}' for s, w in self.shape.widths.items())}),"
                 f" readout {self.lm.readout}, device {self.lm.device}"
                 f"{f', {dist.world_size} ranks' if dist.world_size > 1 else ''}")
        rep.info(f"capturing {', '.join(self.positions)} of {len(self.data)} {self.data.split} "
                 f"examples{' with gradients' if self.cfg.grad else ''}; estimated store size "
                 f"{total / 1e6:,.1f} MB{as_dtype}"
                 f"{f', {need / 1e6:,.1f} MB still to write' if need < total else ''}"
                 f" ({free / 1e9:,.1f} GB free)")
        if self.twin_run:
            rep.info(f"also storing {', '.join(self.twin_positions)} per token as "
                     f"{self.twin_dtype} in run {self.twin_run}, from the same forward pass")
        for line in notes:
            rep.info(line)
        if need + DISK_MARGIN > free:
            levers = (f"lower {arg('profile_bins')} or {arg('top_k')}, or raise "
                      f"{arg('chunk_examples')} (every shard keeps a profile state)"
                      if self.cfg.profile and not self.twin_run else
                      f"lower {arg('max_examples')}, capture fewer {arg('positions')} or use "
                      f"{given('dtype', 'float16')}")
            raise ExtractError(f"not enough disk for {self.out}: the extraction still writes about "
                               f"{need / 1e9:.2f} GB and {free / 1e9:.2f} GB are free; free space, "
                               f"or {levers}")
        dist.barrier()  # every rank validated its inputs before anything is written
        created = not self.out.exists()
        self._made: list[Path] = []  # what this process created (removed again on an error)
        infos = [self._info(d, mode, name, self._config(d, mode))
                 for (d, mode, name) in self.jobs]
        try:
            with contextlib.ExitStack() as held:  # the run locks, released last
                try:
                    if dist.is_main:
                        lens, infos = self._lock_and_begin(held, rep, lens, infos)
                    dist.barrier()
                    twins = self._twins(infos)
                    for (data, _mode, _name), lengths, info in zip(self.jobs, lens, infos):
                        if info in twins.values():
                            continue  # written in its profile run's pass
                        twin = twins.get(info.run)
                        self._capture_run(data, lengths, info, rep, twin)
                        dist.barrier()
                        if dist.is_main:
                            for done in (info, twin) if twin else (info,):
                                self._finish_run(done, rep)
                        dist.barrier()
                except BaseException:
                    if dist.is_main:
                        self._clean_up(created)
                    raise
        except BaseException as e:
            fault = write_fault(e, self.out)  # any OSError: one line with the path and errno
            if fault is not None:
                raise fault from e
            raise
        finally:
            rep.close()
            dist.close()
        return Store([self.out])

    def _twins(self, infos: list[RunInfo]) -> dict[str, RunInfo]:
        """``{profile run: its per-token twin}`` when both are still to write (a twin whose
        profile run is complete is written by a pass of its own)."""
        names = {i.run: i for i in infos}
        if self.twin_run in names and self.run_name in names:
            return {self.run_name: names[self.twin_run]}
        return {}

    def _finish_run(self, info: RunInfo, rep: Reporter) -> None:
        finalize_run(self.out, info)
        acc = f", accuracy {info.accuracy:.4f}" if info.accuracy is not None else ""
        rep.info(f"run {info.run}: {info.n_examples} examples, {sum(info.n_rows.values())} "
                 f"rows ({info.mode}){acc}, {info.seconds:.1f} s")

    def _profile_notes(self, lens: list[np.ndarray]) -> list[str]:
        """For a profile run: refuse a top-K beyond its tokens (``check_tokens``), and say
        how much a per-token capture of the same tokens would write (float16 tensors)."""
        out: list[str] = []
        for (d, mode, name), ln in zip(self.jobs, lens):
            if mode != "profile":
                continue
            rows = self.expected_rows(ln)
            out.extend(profile_seam.check_tokens(self, len(d), rows, len(d.label_names)))
            per_token = sum(n * sum(self.shape.widths[s]) * 2 for s, n in rows.items())
            out.append(f"run {name}: a profile of {sum(rows.values()):,} tokens; storing them "
                       f"per token ({given('positions', ','.join(self.positions))}, float16) would "
                       f"write about {per_token / 1e9:,.2f} GB")
        return out

    def _lock_and_begin(self, held: contextlib.ExitStack, rep: Reporter, lens: list,
                        infos: list[RunInfo]) -> tuple[list, list[RunInfo]]:
        """Rank 0: take the writer lock of each run (kept in ``held`` until the extraction
        ends), then under the store lock create or check the manifest, re-check each run's
        state (another process may have written it meanwhile), remove dead writers' leftovers
        and begin the runs. Returns the lengths and infos of the runs still to write."""
        n_takeovers = len(locks.TAKEOVERS)
        with os_errors(self.out):
            self.out.mkdir(parents=True, exist_ok=True)
        for info in infos:
            held.enter_context(locks.run_lock(self.out, info.run))
        with locks.store_lock(self.out):
            for msg in locks.TAKEOVERS[n_takeovers:]:
                rep.info(msg)
            if (self.out / MANIFEST).exists():
                self._check_existing()
            else:
                _check_out_dir(self.out)  # nobody wrote anything else meanwhile
                Manifest(model=self.identity, libraries=library_versions()).write(self.out)
                self._made.append(self.out / MANIFEST)
            with os_errors(self.out):
                remove_dead_leftovers(self.out)
                remove_dead_leftovers(locks.locks_dir(self.out))
            states = [self._check_resume(i.run, i.config) for i in infos]
            keep = [k for k, st in enumerate(states) if st != "complete"]
            if not keep:
                names = " and ".join(repr(i.run) for i in infos)
                raise ExtractError(f"run {names} already exists in {self.out} (written by "
                                   f"another process meanwhile); pass {switch('overwrite')} or "
                                   f"{given('run', 'NAME')}")
            if len(keep) < len(infos) and self.dist.world_size > 1:
                raise ExtractError(f"run {infos[states.index('complete')].run!r} was completed "
                                   "by another process meanwhile; run the same command again")
            self.jobs = [self.jobs[k] for k in keep]
            lens, infos = [lens[k] for k in keep], [infos[k] for k in keep]
            for info, st in zip(infos, [states[k] for k in keep]):
                d = self.out / RUNS_DIR / info.run
                with os_errors(d):
                    if st == "new" and d.exists():
                        # --overwrite, or a directory a killed writer left without run.json
                        catalog.forget_run(self.out, info.run)
                        shutil.rmtree(d)
                    if not d.exists():
                        self._made.append(d)
                    remove_partials(d)
                    begin_run(self.out, info)
        return lens, infos

    def _clean_up(self, created: bool) -> None:
        """After an error: remove what this process created and nothing else. A run directory
        it made is removed unless a shard was completed (kept to resume); a new store is
        removed only when nobody else wrote into it or holds one of its locks."""
        if not self.out.is_dir():
            return
        with contextlib.suppress(Exception):
            with locks.store_lock(self.out, timeout=10.0):
                for d in self._made:
                    if d.name != MANIFEST and d.is_dir() and not completed_chunks(self.out, d.name):
                        shutil.rmtree(d, ignore_errors=True)
                manifest = self.out / MANIFEST
                if not created or (manifest.exists() and manifest not in self._made):
                    return  # the store was there before, or another process made it
                runs = self.out / RUNS_DIR
                if runs.is_dir() and not any(runs.iterdir()):
                    runs.rmdir()
                others = [p for p in self.out.iterdir()
                          if p.name not in (MANIFEST, locks.LOCKS_DIR)
                          and leftover_pid(p.name) is None]
                ldir = locks.locks_dir(self.out)
                busy = [p for p in ldir.glob("*.lock") if locks.is_locked(p)]
                if not others and not busy:
                    shutil.rmtree(self.out, ignore_errors=True)  # nothing worth resuming

    def _info(self, data: LoadedData, mode: str, name: str, config: dict) -> RunInfo:
        n_chunks = max(1, -(-len(data) // self.cfg.chunk_examples))
        return RunInfo(
            config=config, config_hash=hashlib.sha256(
                json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16],
            chunk_examples=self.cfg.chunk_examples, n_chunks=n_chunks,
            world_size=self.dist.world_size,
            run=name, split=data.split, mode=mode, dataset=data.name,
            dataset_config=data.config, dataset_fingerprint=data.fingerprint,
            text_fields=data.text_fields, label_field=data.label_field,
            labels=data.label_names, template=self.template.source, readout=self.lm.readout,
            verbalizer=self.verb_words, prompt=self.prompt.source if self.prompt else None,
            prompt_hash=self.prompt.sha256 if self.prompt else None,
            n_prompt=self.encoder.n_prompt, positions=self.positions_for(mode),
            grad=self.cfg.grad and mode == "tokens",
            grad_target=self.cfg.grad_target if self.cfg.grad else None,
            dtype=self.dtype_for(mode), max_length=self.max_length, n_examples=len(data))

    def _capture_run(self, data: LoadedData, lengths: np.ndarray, info: RunInfo,
                     rep: Reporter, twin: RunInfo | None = None) -> None:
        """Process this rank's missing chunks of the run, one shard each; with ``twin`` (the
        per-token run of ``--also-capture``) each chunk's forward pass writes both runs."""
        chunks = chunk_order(lengths, self.cfg.chunk_examples)
        runs = [info, twin] if twin is not None else [info]
        done = {i.run: completed_chunks(self.out, i.run) for i in runs}
        complete = set.intersection(*done.values())
        mine = [k for k in range(len(chunks)) if k % self.dist.world_size == self.dist.rank
                and k not in complete]
        if complete:
            rep.info(f"resuming run {info.run}: {len(complete)} of {len(chunks)} chunks "
                     "already written")
        task = rep.task(info.run, total=len(data))
        rep.advance(task, sum(len(chunks[k]) for k in complete), 0)
        t0 = time.perf_counter()
        writer = BackgroundWriter(threaded=self.cfg.writer_thread)
        profiler = profile_seam.RunProfiler.for_run(  # None unless --profile
            self, info, self.out / RUNS_DIR / info.run)
        try:
            shards: list[ShardWriter] = []
            with FFNCapture(self.lm.model, self.lm.adapter, grad=info.grad) as cap:
                try:
                    for k in mine:
                        new = [ShardWriter(self.out / RUNS_DIR / i.run, k, i, self.shape.widths,
                                           self.expected_rows(lengths[chunks[k]], i.positions),
                                           self.dist.rank, n_examples=len(chunks[k]))
                               for i in runs if k not in done[i.run]]
                        shards.extend(new)
                        acc = (profiler.accumulator(k) if profiler and new[0].info is info
                               else None)  # --profile
                        self._capture_chunk(data, chunks[k], new, cap, writer, rep, task, acc)
                        if acc is not None:  # --profile: the shard commits the reduced state
                            new[0].profile = acc.state()
                        for sh in new:  # checksums and fsync overlap the next chunk
                            writer.submit(sh.commit)
                    writer.flush()
                except BaseException:
                    writer.drain()
                    for sh in shards:
                        if not sh.committed:
                            sh.abort()
                    raise
        finally:
            writer.close()
        for i in runs:
            i.seconds = round(time.perf_counter() - t0, 3)

    def _capture_chunk(self, data: LoadedData, chunk: np.ndarray, shards: list[ShardWriter],
                       cap: FFNCapture, writer: BackgroundWriter, rep: Reporter, task: int,
                       acc: profile_seam.ProfileAccumulator | None = None) -> None:
        """One chunk's batches: one forward pass each, whose captured rows go to every shard
        of ``shards`` (the first run's positions are captured; a per-token twin takes its
        rows out of them) and, with ``acc``, into the profile."""
        lm, enc, cfg, first = self.lm, self.encoder, self.cfg, shards[0].info
        grad = first.grad
        rows_done = [dict.fromkeys(self.shape.stacks, 0) for _ in shards]
        dev = lm.device
        for ids, batch in iter_batches(enc, data.texts, chunk, cfg.batch_size):
            sel = enc.select(batch, first.positions)
            B = len(ids)
            cap.clear()
            where, twin = self._select(cap, batch, sel, shards, B, profile_seam.streams(acc))
            labels = data.labels[ids]
            sels = self._sels(sel, B)
            with (torch.enable_grad() if grad else torch.inference_mode(),
                  profile_seam.reducing(acc, cap, profile_seam.profile_rows(sels, ids, labels),
                                        where)):  # --profile
                out = lm.model(**model_inputs(lm, batch, self.prompt, need_embeds=grad))
                logits = label_logits(lm, out, batch, self.verb_ids, self.prompt)
                if grad:
                    tgt = torch.as_tensor(labels, device=dev)
                    target_value(logits, tgt, cfg.grad_target).sum().backward()
                del out
            logits_np = None if logits is None else logits.detach().float().cpu().numpy()
            pred = (logits_np.argmax(-1) if logits_np is not None
                    else np.full(B, -1, dtype=np.int64))
            for shard, done in zip(shards, rows_done):
                pick = None
                if shard.info is first:
                    own = sels
                elif twin is not None:  # the twin: the hooks stored its rows alone
                    own = twin
                else:  # the twin: its positions' rows out of the captured ones
                    own, pick = self._twin_rows(batch, sel, shard.info.positions, B)
                offsets = dict(done)
                for stack, (b, _, _) in own.items():
                    done[stack] += len(b)
                acts, grads = self._host_copies(cap, shard.info, pick)
                writer.submit(self._write_batch, shard, data, batch, ids, labels, pred,
                              logits_np, own, offsets, acts, grads)
            rep.advance(task, B, int(batch.lengths.sum()) + B * enc.n_prompt)

    def _select(self, cap: FFNCapture, batch, sel, shards: list[ShardWriter], B: int,
                streams: bool) -> tuple[dict | None, dict | None]:
        """Point the capture hooks at a batch's rows: the first run's (``sel``), or, when the
        profile reduces ``h`` inside the hooks (``streams``) and a per-token twin runs beside
        it, the twin's alone (the profile's rows are then not copied at all). Returns
        ``(where, twin)``: the profile's rows ``{stack: (b, t)}`` when the hooks store other
        rows, and the twin's ``{stack: (b, t, slots)}`` when they are the rows stored; None
        and None otherwise."""
        dev, in_stack = self.lm.device, self.shape.stacks[0]
        where = twin = None
        rows = sel
        if streams and len(shards) > 1:
            rows = self.encoder.select(batch, shards[1].info.positions)
            where, twin = {in_stack: (sel.b, sel.t)}, self._sels(rows, B)
        cap.select(in_stack, torch.as_tensor(rows.b, device=dev),
                   torch.as_tensor(rows.t, device=dev))
        if self.lm.is_seq2seq:
            cap.select("decoder", torch.arange(B, device=dev),
                       torch.zeros(B, dtype=torch.long, device=dev))
        return where, twin

    def _sels(self, sel, B: int) -> dict:
        """``{stack: (b, t, slots)}`` of a batch's captured rows."""
        sels = {self.shape.stacks[0]: (sel.b, sel.t, sel.slots)}
        if self.lm.is_seq2seq:
            sels["decoder"] = (np.arange(B), np.zeros(B, dtype=np.int64), ["dec:0"] * B)
        return sels

    def _twin_rows(self, batch, sel, positions: list[str], B: int):
        """The rows of ``positions`` (``{stack: (b, t, slots)}``) and their indices ``[n]``
        (a device tensor) among the captured rows ``sel`` of the encoder stack."""
        own = self.encoder.select(batch, positions)
        width = int(max(sel.t.max(initial=0), own.t.max(initial=0))) + 1
        have = np.asarray(sel.b, np.int64) * width + np.asarray(sel.t, np.int64)
        want = np.asarray(own.b, np.int64) * width + np.asarray(own.t, np.int64)
        order = np.argsort(have, kind="stable")
        at = order[np.searchsorted(have[order], want)]
        assert np.array_equal(have[at], want), "a twin row outside the captured rows"
        return self._sels(own, B), torch.as_tensor(at, device=self.lm.device)

    def _host_copies(self, cap: FFNCapture, info: RunInfo, pick: torch.Tensor | None):
        """What a run keeps of a batch's captured tensors: per-token copies (``tokens``;
        ``pick``: only these encoder rows), float32 for running statistics (``stats``), or
        nothing (``profile``: nothing per token leaves the device)."""
        if info.mode == "profile":
            return {}, {}
        in_stack = self.shape.stacks[0]

        def rows(key, x):
            return x if pick is None or key[0] != in_stack else x.index_select(0, pick)

        if info.mode == "stats":
            return {key: HostCopy(x, "float32") for key, x in cap.acts.items()}, {}
        acts = {key: HostCopy(rows(key, x), info.dtype) for key, x in cap.acts.items()}
        grads = ({key: HostCopy(rows(key, g), info.dtype) for key, g in cap.grads.items()}
                 if info.grad else {})
        return acts, grads

    def _write_batch(self, shard: ShardWriter, data: LoadedData, batch, ids: np.ndarray,
                     labels: np.ndarray, pred: np.ndarray, logits: np.ndarray | None,
                     sels: dict, offsets: dict, acts: dict, grads: dict) -> None:
        """Runs in the writer thread: tables, row index, tensors or running statistics."""
        info, P = shard.info, self.encoder.n_prompt
        B = len(ids)
        scored = (labels >= 0) & (logits is not None)
        correct = (pred == labels) & scored
        shard.write_examples(pa.table({
            "run": [info.run] * B, "split": [info.split] * B,
            "example_id": ids.astype(np.int64), "idx": data.idx[ids], "text": batch.texts,
            "label": labels, "pred": pred, "correct": pa.array(correct, mask=~scored),
            "n_tokens": (batch.lengths + P).astype(np.int32),
            "label_logits": (pa.array(list(logits), pa.list_(pa.float32())) if logits is not None
                             else pa.nulls(B, pa.list_(pa.float32()))),
        }))
        if info.mode == "tokens":
            shard.write_tokens(self._tokens_table(info.run, batch, ids))
            for stack, (b, t, slots) in sels.items():
                n = len(b)
                shard.write_rows(pa.table({
                    "run": [info.run] * n, "stack": [stack] * n,
                    "row": np.arange(offsets[stack], offsets[stack] + n),
                    "example_id": ids[b].astype(np.int64), "position": t.astype(np.int32),
                    "slot": slots}))
            for key, hc in acts.items():
                shard.append("activations", key[0], key[1], hc.numpy())
            for key, hc in grads.items():
                shard.append("gradients", key[0], key[1], hc.numpy())
        elif info.mode == "profile":  # tokens (for context windows) and row counts only
            shard.write_tokens(self._tokens_table(info.run, batch, ids))
            for stack, (b, _t, _slots) in sels.items():
                shard.count_rows(stack, len(b))
        else:
            st = shard.stats
            for stack, (b, _t, slots) in sels.items():
                sid = st.slot_ids(stack, slots)
                lab = labels[b]
                st.update_counts(stack, sid, lab)
                shard.count_rows(stack, len(b))
                for layer in range(len(self.shape.widths[stack])):
                    st.update(stack, layer, sid, lab, acts[(stack, layer)].numpy())

    def _tokens_table(self, run: str, batch, ids: np.ndarray) -> pa.Table:
        """The batch's rows of the tokens table (see :mod:`neurondb.extract.tokens`)."""
        if self._tokens is None:
            start = decoder_start_id(self.lm.model.config) if self.lm.is_seq2seq else None
            self._tokens = TokensTableBuilder(self.lm.tokenizer, self.encoder,
                                              self.shape.stacks[0], start)
        return self._tokens.build(run, batch, ids)


def extract(model, data, out: str | Path, **kwargs) -> Store:
    """Run ``model`` over ``data`` and record FFN neurons into the store ``out``.

    ``model``: a hub name, a path, an offline alias or a loaded ``PreTrainedModel`` (pass its
    ``tokenizer=``; it is used as it is: device and dtype kept, no reload, its training
    flags restored afterwards). ``data``: a name, a path, a ``pandas.DataFrame``, a
    ``pyarrow.Table`` or a ``datasets.Dataset``. Keyword arguments are the fields of
    :class:`~neurondb.extract.request.ExtractRequest` (split, text_fields, label_field,
    template, verbalizer, task, readout, prompt, positions, stats_split, grad, grad_target,
    dtype, max_examples, batch_size, max_length, device, run, overwrite, progress, ...).
    Returns the opened :class:`~neurondb.store.reader.Store`. On any error the store is left
    as it was (a new store directory is removed).
    """
    return Extraction(ExtractRequest(model=model, data=data, out=out, **kwargs)).run()


#: the name tests and older callers use
_Extraction = Extraction
