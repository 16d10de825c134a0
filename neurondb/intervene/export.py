"""Export a pruned model as a directory Transformers loads, and load it back (SPEC §6).

Directory layout (format ``compact``)::

    config.json                  stock config + ``neurondb_prune`` (widths, modules to shrink)
                                 + ``auto_map`` -> modeling_neurondb_pruned.<Class>
    model.safetensors            the pruned weights (per-layer FFN widths)
    modeling_neurondb_pruned.py  generic shrink code + one subclass per Auto head
    tokenizer files              when a tokenizer is given
    neurondb_prune.json          provenance: mask hash and provenance, ratio, widths, counts
    neurondb_mask.parquet        the neurons actually removed (the portable mask file)
    <extra files>                soft prompts, heads, ... copied along

Format ``zeroed`` writes full-width weights with the removed neurons zeroed, no ``auto_map``
and no modeling file: plain ``AutoModelFor...from_pretrained(dir)`` loads it.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import transformers
from torch import nn

import neurondb
from neurondb.arch import adapter_for
from neurondb.arch.channels import ops_for
from neurondb.errors import arg, given, switch
from neurondb.intervene.errors import ExportError
from neurondb.intervene.mask import LayerKey, NeuronMask
from neurondb.intervene.prune import PruneReport, prune_model, tensor_bytes
from neurondb.runtime.automap import auto_classes
from neurondb.runtime.pruned import (
    CLASS_PREFIX,
    CONFIG_KEY,
    stock_class,
)
from neurondb.store.io import leftover_pid, pid_alive, sha256_file
from neurondb.store.layout import PARTIAL_PREFIX

MODELING_FILE = "modeling_neurondb_pruned.py"
RECORD_FILE = "neurondb_prune.json"
MASK_FILE = "neurondb_mask.parquet"
SPEC_VERSION = 1


@dataclass
class ExportReport:
    """What an export wrote. Byte counts: ``tensor_bytes_*`` are the state-dict tensors,
    ``weights_file_bytes`` the safetensors file(s) on disk (header included)."""

    out_dir: Path
    prune: PruneReport
    tensor_bytes_before: int
    tensor_bytes_after: int
    weights_file_bytes: int
    auto_map: dict[str, str]
    record: dict


file_sha256 = sha256_file  # the store's one sha256 helper (neurondb.store.io)


def safetensors_bytes(directory: str | Path) -> int:
    """Total size of the ``*.safetensors`` files of a directory (bytes)."""
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors"))



# -- the spec of the modules to shrink ------------------------------------------------------
def shrink_spec(model: nn.Module) -> dict:
    """``config.neurondb_prune`` for a (pruned) model: every FFN projection with its role,
    width and bias flag, paths relative to ``model.base_model`` (from the adapter)."""
    adapter = adapter_for(model)
    base = model.base_model
    modules = []
    widths: dict[str, list[int]] = {}
    for stack, layer, out_proj, in_projs in adapter.iter_ffn(base):
        out_path, in_paths = adapter.ffn_paths(base, stack, layer)
        width = ops_for(out_proj).n_neurons(out_proj, "out")
        widths.setdefault(stack, []).append(width)
        for path, proj in zip(in_paths, in_projs):
            modules.append({"path": path, "role": "in", "width": width,
                            "bias": proj.bias is not None})
        modules.append({"path": out_path, "role": "out", "width": width,
                        "bias": out_proj.bias is not None})
    return {"version": SPEC_VERSION, "format": "compact", "family": adapter.family,
            "widths": widths, "modules": modules}



# -- modeling file ------------------------------------------------------------------------
def modeling_source(classes: Sequence[str]) -> str:
    """The modeling file: the generic template plus one subclass per stock class name."""
    template = (Path(__file__).with_name("modeling_template.py")).read_text()
    parts = [template.rstrip("\n"), ""]
    for name in classes:
        parts += [
            "",
            f"from transformers import {name}  # noqa: E402",
            "",
            "",
            f"class {CLASS_PREFIX}{name}({name}):",
            f'    """{name} with each FFN at the width recorded in config.neurondb_prune."""',
            "",
            "    def __init__(self, config, *args, **kwargs):",
            "        super().__init__(config, *args, **kwargs)",
            f"        shrink_ffn(self, config.{CONFIG_KEY})",
        ]
    return "\n".join(parts) + "\n"


def _auto_map(model: nn.Module) -> dict[str, str]:
    cls = stock_class(model)
    if getattr(transformers, cls.__name__, None) is not cls:
        raise ExportError(f"{cls.__name__} is not a class of the transformers package; the "
                          f"compact format subclasses stock classes (use "
                          f"{given('format', 'zeroed')})")
    heads = auto_classes(model.config.model_type)  # a head outside these: load_pruned only
    stem = Path(MODELING_FILE).stem
    return {auto: f"{stem}.{CLASS_PREFIX}{name}" for auto, name in heads.items()}


# -- directory handling -------------------------------------------------------------------
def check_export_dir(out: str | Path, overwrite: bool, name: str = "out_dir") -> None:
    """Refuse an ``out`` (argument ``name``) that exists, unless ``overwrite`` and it is an
    export; what is not an export (a file, a directory of other things) is refused first,
    with or without ``overwrite`` (suggesting it would only lead to that refusal)."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir() or (any(out.iterdir()) and not (out / RECORD_FILE).exists()):
        raise ExportError(f"refusing to write the export to {out}: it exists and is not a "
                          f"neurondb export directory; choose another {arg(name, '--out')}")
    if not overwrite:
        raise ExportError(f"export directory {out} exists; pass {switch('overwrite')} "
                          f"or choose another {arg(name, '--out')}")


def _partial_dir(out: Path) -> Path:
    """A new empty ``.partial-<name>.<random>-<pid>`` folder beside ``out``: the pid lets a
    later export remove it once this process is dead (a killed export), never while it runs."""
    while True:
        p = out.with_name(f"{PARTIAL_PREFIX}{out.name}.{secrets.token_hex(4)}-{os.getpid()}")
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue


def remove_dead_exports(parent: str | Path) -> list[Path]:
    """Remove the ``.partial-*-PID`` folders that killed exports left in ``parent`` (their pid
    is no longer running); a live export's folder and any other file are never touched.
    Returns what was removed."""
    parent = Path(parent)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        pid = leftover_pid(p.name)
        if (p.name.startswith(PARTIAL_PREFIX) and pid is not None and pid != os.getpid()
                and p.is_dir() and not p.is_symlink() and not pid_alive(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _copy_extra(extra_files, dest: Path, reserved: set[str]) -> list[str]:
    if not extra_files:
        return []
    pairs = (extra_files.items() if isinstance(extra_files, Mapping)
             else ((Path(p).name, p) for p in extra_files))
    names = []
    for name, src in pairs:
        src = Path(src)
        if not src.exists():
            raise ExportError(f"extra file {src} does not exist")
        if name in reserved or (dest / name).exists():
            raise ExportError(f"extra file name {name!r} collides with a file of the export")
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
        names.append(name)
    return names


def _fix_config(path: Path, arch: str) -> None:
    cfg = json.loads(path.read_text())
    cfg["architectures"] = [arch]
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _attach_spec(work: nn.Module, report: PruneReport, fmt: str,
                 auto_map: dict[str, str]) -> None:
    """Record ``config.neurondb_prune`` (and ``config.auto_map`` when given) on the pruned model."""
    if fmt == "compact":
        spec = shrink_spec(work)
    else:
        spec = {"version": SPEC_VERSION, "format": "zeroed", "family": report.family,
                "widths": report.widths_after, "modules": []}
    work.config.neurondb_prune = spec
    if auto_map:
        work.config.auto_map = auto_map


def _save_model(work: nn.Module, tokenizer, tmp: Path, arch: str,
                auto_map: dict[str, str]) -> int:
    """Write weights, config, modeling file (compact) and tokenizer into ``tmp``; returns the
    safetensors files' size in bytes (measured before any extra file is copied in)."""
    work.save_pretrained(tmp)
    weights_bytes = safetensors_bytes(tmp)  # before extra files (a prompt may be one)
    _fix_config(tmp / "config.json", arch)
    if auto_map:
        classes = sorted({v.split(".")[-1][len(CLASS_PREFIX):] for v in auto_map.values()})
        (tmp / MODELING_FILE).write_text(modeling_source(classes))
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    return weights_bytes


def _export_record(model: nn.Module, work: nn.Module, mask: NeuronMask, report: PruneReport,
                   tmp: Path, *, fmt: str, arch: str, mask_file: str | Path | None,
                   bytes_before: int, weights_bytes: int, auto_map: dict[str, str],
                   extras: list[str], provenance: dict | None) -> dict:
    """The provenance record (``neurondb_prune.json``); ``tmp`` holds the mask file already."""
    return {
        "neurondb_version": neurondb.__version__,
        "transformers_version": transformers.__version__,
        "format": fmt, "architecture": arch, "family": report.family,
        "source_model": getattr(model.config, "_name_or_path", None),
        "mask": {
            "file": MASK_FILE, "sha256": file_sha256(tmp / MASK_FILE),
            "selection_sha256": report.removed.sha256(),
            "source_file": None if mask_file is None else str(mask_file),
            "source_sha256": None if mask_file is None else file_sha256(mask_file),
            "n_selected": len(mask), "provenance": mask.meta,
        },
        "prune": report.to_dict(),
        "tensor_bytes_before": bytes_before, "tensor_bytes_after": tensor_bytes(work),
        "weights_file_bytes": weights_bytes,
        "auto_map": auto_map, "extra_files": extras,
        "provenance": provenance or {},
    }


def _install(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` directory to ``out``, replacing an existing export."""
    if out.exists():
        trash = out.with_name(f"{PARTIAL_PREFIX}{out.name}.old-{os.getpid()}")
        out.rename(trash)
        tmp.rename(out)
        shutil.rmtree(trash)
    else:
        tmp.rename(out)


def export_pruned(model: nn.Module, tokenizer, mask: NeuronMask, out_dir: str | Path,
                  format: str = "compact", *,  # noqa: A002  (the CLI's --format)
                  means: Mapping[LayerKey, np.ndarray] | None = None,
                  priority: Mapping[LayerKey, np.ndarray] | None = None,
                  provenance: dict | None = None,
                  extra_files: Sequence[str | Path] | Mapping[str, str | Path] | None = None,
                  mask_file: str | Path | None = None,
                  overwrite: bool = False, inplace: bool = False) -> ExportReport:
    """Prune ``model`` by ``mask`` and write a loadable directory ``out_dir``.

    ``format``: ``compact`` (smaller layers; ``AutoModelFor...from_pretrained(dir,
    trust_remote_code=True)`` or :func:`load_pruned`) or ``zeroed`` (full width, removed
    neurons zeroed; plain Transformers). ``means``: mean compensation (see
    :func:`neurondb.intervene.prune_model`). ``priority``: highest-ranked neurons first per
    layer, for the keep-one rule. ``provenance``: recorded as is (ratio, ranking, store,
    source model). ``extra_files``: paths (or ``{name: path}``) copied into the directory.
    ``mask_file``: the mask file the mask came from; its SHA-256 is recorded.
    ``inplace``: prune ``model`` itself instead of a copy (saves memory for large models).
    The directory is written atomically; an existing one is refused unless ``overwrite``.
    """
    out = Path(out_dir).absolute()
    check_export_dir(out, overwrite)
    work = model if inplace else copy.deepcopy(model)
    bytes_before = tensor_bytes(work)
    report = prune_model(work, mask, means=means, priority=priority, fmt=format)
    arch = stock_class(work).__name__
    auto_map = _auto_map(work) if format == "compact" else {}
    _attach_spec(work, report, format, auto_map)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_exports(out.parent)
    tmp = _partial_dir(out)
    try:
        weights_bytes = _save_model(work, tokenizer, tmp, arch, auto_map)
        mask_meta = {**mask.meta, "removed_by": "neurondb prune", "format": format}
        report.removed.to_file(tmp / MASK_FILE, mask_meta)
        reserved = {p.name for p in tmp.iterdir()} | {RECORD_FILE}
        extras = _copy_extra(extra_files, tmp, reserved)
        record = _export_record(model, work, mask, report, tmp, fmt=format, arch=arch,
                                mask_file=mask_file, bytes_before=bytes_before,
                                weights_bytes=weights_bytes, auto_map=auto_map,
                                extras=extras, provenance=provenance)
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportReport(out_dir=out, prune=report, tensor_bytes_before=bytes_before,
                        tensor_bytes_after=record["tensor_bytes_after"],
                        weights_file_bytes=weights_bytes, auto_map=auto_map, record=record)
