"""Naming datasets for tuning and transfer: ``DATA:split`` specs, and the key that says
whether two mentions of a dataset are the same task."""

from __future__ import annotations

from pathlib import Path

SPLIT_STEMS = ("train", "validation", "valid", "val", "dev", "test")


def data_key(data: str, config: str | None = None) -> str:
    """A split-independent identity of a dataset: the resolved directory of a local
    ``<split>.<ext>`` collection (or the resolved file), else the hub/preset name
    (``name/config``). Prompts tuned on a dataset are matched to transfer targets by it."""
    p = Path(data)
    if p.exists():
        p = p.resolve()
        if p.is_file() and p.stem.lower() in SPLIT_STEMS:
            p = p.parent
        return str(p)
    return f"{data}/{config}" if config else data


def parse_data_spec(spec: str, default_split: str = "validation") -> tuple[str, str]:
    """``"DATA:split"`` -> ``(DATA, split)``; without a colon the split is ``default_split``.
    The split is what follows the last colon, so ``C:/x:dev`` and ``a/b:test`` both work;
    a trailing part with a path separator is taken as part of the path."""
    spec = spec.strip()
    if ":" in spec:
        data, split = spec.rsplit(":", 1)
        if split and "/" not in split and "\\" not in split and data:
            return data, split
    return spec, default_split
