"""Dense per-token tensors in HDF5: one dataset ``/<stack>/<layer>`` of shape ``[rows, d_ff]``.

Chunks are ``[chunk_rows, 64]`` so that reading one neuron touches 64/d_ff of the file and a
full scan reads whole row blocks. The writer buffers rows per dataset in chunk order and
writes whole chunks directly (no hyperslab copy, no read-modify-write, no chunk cache).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import h5py

from neurondb.errors import StoreError, StoreIOError
from neurondb.store import failpoints
from neurondb.store.blockhash import WatchedFile
from neurondb.store.codec import decode, numpy_storage_dtype
from neurondb.store.io import describe_os_error
from neurondb.store.layout import tensor_key

NEURON_CHUNK = 64
CHUNK_BYTES = 4 << 20  # one row block per dataset, about 4 MB
CACHE_BYTES = 64 << 20


def chunk_rows_for(d_ff: int, itemsize: int, expected_rows: int | None = None) -> int:
    """Rows per chunk: about CHUNK_BYTES per row block, at most 1024, and no more than the
    expected row count (so a small run does not allocate a mostly empty chunk)."""
    rows = CHUNK_BYTES // max(1, d_ff * itemsize)
    if expected_rows:
        rows = min(rows, max(16, expected_rows))
    p = 16
    while p * 2 <= min(rows, 1024):
        p *= 2
    return p


def clean_os_error(e: OSError, path: str | Path) -> OSError:
    """The same errno as a short ``OSError(errno, strerror, path)``: h5py's messages span
    several lines and name no path Python can use."""
    code = e.errno
    if code is None:  # h5py/pyarrow sometimes keep the errno only in the text
        m = re.search(r"errno\s*[=:]?\s*(\d+)", str(e), re.IGNORECASE) or \
            re.search(r"\[Errno (\d+)\]", str(e))
        code = int(m.group(1)) if m else None
    if code is None:
        return OSError(None, str(e).splitlines()[0] if str(e) else type(e).__name__, str(path))
    return OSError(code, os.strerror(code), str(e.filename or path))


def tensor_io_error(e: OSError, path: str | Path) -> StoreIOError:
    """A one-line :class:`StoreIOError` naming ``path`` and the errno of an HDF5 failure."""
    clean = clean_os_error(e, path)
    err = StoreIOError(describe_os_error(clean, path))
    err.errno = clean.errno  # type: ignore[attr-defined]
    err.filename = str(path)  # type: ignore[attr-defined]
    return err


@contextlib.contextmanager
def damaged(path: str | Path, what: str = "") -> Iterator[None]:
    """Turn an h5py/OS failure while reading ``path`` into one line: an operating-system
    error (EIO, ...) as :class:`StoreIOError` naming path and errno, anything HDF5 reports
    about the file's structure (a bad B-tree or symbol table node, a truncated file) as a
    :class:`StoreError` that names the file and `neurondb verify`."""
    try:
        yield
    except StoreError:
        raise
    except (OSError, RuntimeError, KeyError) as e:
        if isinstance(e, KeyError) and "Unable to" not in str(e):
            raise  # a tensor that is not there: the caller's message
        code = getattr(e, "errno", None)
        if isinstance(e, OSError) and code is not None and code in _OS_READ_ERRNOS:
            raise StoreIOError(describe_os_error(clean_os_error(e, path), path)) from e
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        first = first.split(" (")[0] if len(first) > 160 else first
        raise StoreError(f"{path}{f' ({what})' if what else ''} cannot be read ({first}); the "
                         "file is damaged: run `neurondb verify` and re-extract the run") from e


# errnos of the system (a failing disk, permissions, limits), not of the file's content
_OS_READ_ERRNOS = {getattr(errno, n) for n in (
    "EIO", "ENXIO", "EACCES", "EPERM", "ENODEV", "EMFILE", "ENFILE", "ENOMEM", "ETIMEDOUT",
    "ESTALE", "EREMOTEIO") if hasattr(errno, n)}

_OPEN_WRITERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _abort_open_writers() -> None:
    """Close writers still open at exit without flushing (see :meth:`TensorWriter.abort`):
    HDF5 otherwise retries the failed flush in its own shutdown and crashes (SIGSEGV)."""
    for w in list(_OPEN_WRITERS):
        w.abort()


class TensorWriter:
    """Append rows ``[n, d_ff]`` per (stack, layer) to one HDF5 file.

    ``widths``: ``{stack: (d_ff per layer, ...)}``. ``dtype``: storage dtype name.
    Rows are buffered per dataset in chunk order (``[n_col_chunks, chunk_rows, 64]``) and each
    full row block is written as whole chunks (``write_direct_chunk``: no HDF5 hyperslab
    copy, no chunk cache). The file goes through a :class:`~neurondb.store.blockhash.WatchedFile`,
    so its block checksum is computed while rows are still coming (:meth:`close` returns the
    record a commit keeps). Every operating-system error (ENOSPC, EIO, ...) is raised as a
    one-line :class:`~neurondb.errors.StoreIOError` naming the file and the errno; after one,
    only :meth:`abort` is useful.
    """

    def __init__(self, path: Path, widths: dict[str, tuple[int, ...]], dtype: str,
                 expected_rows: dict[str, int] | None = None):
        import h5py  # imported when a tensor file is opened (a light import)
        self.path = Path(path)
        self.dtype = dtype
        self.np_dtype = numpy_storage_dtype(dtype)
        self.datasets: dict[tuple[str, int], h5py.Dataset] = {}
        self.record: dict | None = None
        with self._io():
            self.file = WatchedFile(self.path)
            try:
                self.f = h5py.File(self.file, "w", rdcc_nbytes=0)
            except BaseException:
                self.file.close()
                raise
            _OPEN_WRITERS.add(self)
            try:
                self._create(widths, expected_rows)
            except BaseException:
                self.abort()
                raise

    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        try:
            yield
            seen = getattr(getattr(self, "file", None), "error", None)
            if seen is not None:  # a write the file refused (HDF5 was told it succeeded)
                raise tensor_io_error(seen, self.path) from seen
        except StoreError:
            raise
        except (OSError, RuntimeError) as e:
            seen = getattr(getattr(self, "file", None), "error", None)
            if seen is not None:  # the errno the file saw (h5py's text may not have it)
                raise tensor_io_error(seen, self.path) from e
            if isinstance(e, RuntimeError) and \
                    clean_os_error(OSError(None, str(e)), self.path).errno is None:
                raise
            raise tensor_io_error(e if isinstance(e, OSError) else OSError(None, str(e)),
                                  self.path) from e

    def _create(self, widths: dict[str, tuple[int, ...]],
                expected_rows: dict[str, int] | None) -> None:
        dtype = self.dtype
        self.f.attrs["dtype"] = dtype
        self.buffers: dict[tuple[str, int], np.ndarray] = {}
        self.fill: dict[tuple[str, int], int] = {}
        self.rows_written: dict[tuple[str, int], int] = {}
        for stack, ws in widths.items():
            for layer, d_ff in enumerate(ws):
                cr = chunk_rows_for(d_ff, self.np_dtype.itemsize,
                                    (expected_rows or {}).get(stack))
                cw = min(NEURON_CHUNK, d_ff)
                ds = self.f.create_dataset(
                    tensor_key(stack, layer), shape=(0, d_ff), maxshape=(None, d_ff),
                    dtype=self.np_dtype, chunks=(cr, cw),
                )
                ds.attrs["dtype"] = dtype
                key = (stack, layer)
                self.datasets[key] = ds
                self.buffers[key] = np.zeros((-(-d_ff // cw), cr, cw), dtype=self.np_dtype)
                self.fill[key] = 0
                self.rows_written[key] = 0

    def append(self, stack: str, layer: int, rows: np.ndarray) -> None:
        """Append ``rows`` ``[n, d_ff]`` already in the storage dtype."""
        key = (stack, layer)
        buf = self.buffers[key]
        n_cc, cr, cw = buf.shape
        d_ff = rows.shape[1]
        whole = d_ff // cw  # column chunks filled across their width
        n, i = rows.shape[0], 0
        with self._io():
            while i < n:
                f = self.fill[key]
                take = min(n - i, cr - f)
                part = rows[i:i + take]
                if whole:
                    buf[:whole, f:f + take] = \
                        part[:, :whole * cw].reshape(take, whole, cw).transpose(1, 0, 2)
                if whole < n_cc:  # the last column chunk is narrower than cw
                    buf[whole, f:f + take, :d_ff - whole * cw] = part[:, whole * cw:]
                self.fill[key] = f + take
                i += take
                if self.fill[key] == cr:
                    self._flush(key)

    def _flush(self, key: tuple[str, int]) -> None:
        """Write the buffered rows of ``key`` as whole chunks (the rows past ``fill`` of a last,
        partial row block are zeros: HDF5 stores whole chunks and never reads past the end)."""
        failpoints.hit("tensor.flush", key=key)
        f = self.fill[key]
        if f == 0:
            return
        buf = self.buffers[key]
        if f < buf.shape[1]:
            buf[:, f:] = 0
        ds = self.datasets[key]
        start = self.rows_written[key]
        ds.resize(start + f, axis=0)
        cw = buf.shape[2]
        for j in range(buf.shape[0]):
            ds.id.write_direct_chunk((start, j * cw), buf[j])
        self.rows_written[key] = start + f
        self.fill[key] = 0
        self.file.settle()

    def close(self) -> dict:
        """Flush the buffers, close the file and return its record ``{"bytes",
        "xxh3_128_blocks", "block_bytes"}`` (a StoreIOError leaves it for :meth:`abort`)."""
        with self._io():
            for key in self.datasets:
                self._flush(key)
            # flush before closing: a flush that fails leaves the file open and intact for
            # abort(), a close that fails half way leaves HDF5 in a state that crashes at exit
            self.f.flush()
            self.datasets.clear()
            self.f.close()
            self.record = self.file.finish()
        _OPEN_WRITERS.discard(self)
        return self.record

    def abort(self) -> None:
        """Close the file without writing anything more (its content is thrown away).

        After a failed write (a full disk, an I/O error) HDF5 cannot flush its caches, so a
        plain close fails and leaves the file open inside the library, whose shutdown then
        crashes the interpreter (SIGSEGV after the error message). The file is told to discard
        what it is given first, so the final flush goes nowhere and the close succeeds.
        """
        _OPEN_WRITERS.discard(self)
        watched = getattr(self, "file", None)
        if watched is not None:
            watched.discard()
        f = getattr(self, "f", None)
        self.datasets.clear()
        if f is not None and f.id.valid:
            with contextlib.suppress(Exception):
                f.close()
        if watched is not None:
            watched.close()


@contextlib.contextmanager
def h5_writing(path: str | Path, **kwargs) -> Iterator[h5py.File]:
    """A small HDF5 file (running statistics, a few MB) built in memory and written to
    ``path`` in one go, safe on a full or failing disk.

    HDF5 never touches the disk: the file is made with the ``core`` driver without a backing
    store, and its image is written with plain Python I/O, so ENOSPC/EIO is a one-line
    :class:`StoreIOError` naming ``path`` and the errno (and leaves no partial file). A plain
    ``with h5py.File(path, "w")`` whose writes fail instead leaves the file open inside HDF5,
    prints "Exception ignored" tracebacks and crashes the interpreter at exit (SIGSEGV).
    """
    import h5py  # imported when a tensor file is opened (a light import)
    path = Path(path)
    f = h5py.File(f"{path.name}-{id(path)}", "w", driver="core", backing_store=False, **kwargs)
    try:
        yield f
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    try:
        with open(path, "wb") as out:
            out.write(image)
    except OSError as e:
        with contextlib.suppress(OSError):
            path.unlink()
        raise StoreIOError(describe_os_error(clean_os_error(e, path), path)) from e


class TensorReader:
    """Read float32 rows/neurons of one HDF5 tensor file (activations or gradients)."""

    def __init__(self, path: Path):
        import h5py  # imported when a tensor file is opened (a light import)
        self.path = Path(path)
        with damaged(self.path):
            self.f = h5py.File(self.path, "r", rdcc_nbytes=CACHE_BYTES)
            self.dtype = str(self.f.attrs["dtype"])

    def dataset(self, stack: str, layer: int) -> h5py.Dataset:
        key = tensor_key(stack, layer)
        with damaged(self.path, key):
            present = key in self.f
            if present:
                return self.f[key]
        raise KeyError(f"no tensor {key} in {self.path}")

    def shape(self, stack: str, layer: int) -> tuple[int, int]:
        return tuple(self.dataset(stack, layer).shape)  # type: ignore[return-value]

    def read(self, stack: str, layer: int, rows: slice | np.ndarray | None = None,
             neurons: np.ndarray | list[int] | None = None) -> np.ndarray:
        """float32 ``[n_rows, n_neurons]``; ``rows``/``neurons`` are a slice or index arrays
        in any order (duplicates allowed)."""
        with damaged(self.path, tensor_key(stack, layer)):
            return self._read(stack, layer, rows, neurons)

    def _read(self, stack: str, layer: int, rows: slice | np.ndarray | None,
              neurons: np.ndarray | list[int] | None) -> np.ndarray:
        ds = self.dataset(stack, layer)
        if rows is None or isinstance(rows, slice):
            rsel, rback = (slice(None) if rows is None else rows), None
        else:
            r = np.asarray(rows, dtype=np.int64)
            rsel, rback = np.unique(r, return_inverse=True)
            if rsel.size == 0:
                width = ds.shape[1] if neurons is None else len(neurons)
                return np.zeros((0, width), np.float32)
        if neurons is None:
            raw = ds[rsel]
        else:
            idx = np.asarray(neurons, dtype=np.int64)
            uniq, nback = np.unique(idx, return_inverse=True)
            raw = ds[rsel, uniq] if isinstance(rsel, slice) else ds[rsel][:, uniq]
            raw = raw[:, nback]
        if rback is not None:
            raw = raw[rback]
        return decode(raw, self.dtype)

    def iter_chunks(self, stack: str, layer: int, chunk_rows: int | None = None,
                    neurons: np.ndarray | list[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_row, float32 [n, d])`` blocks; memory is bounded by one block."""
        ds = self.dataset(stack, layer)
        n = ds.shape[0]
        step = chunk_rows or max(ds.chunks[0], 8192)
        for start in range(0, n, step):
            yield start, self.read(stack, layer, slice(start, min(n, start + step)), neurons)

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TensorSet:
    """The tensors of one run and kind across its shards, seen as one ``[rows, d_ff]`` array
    per (stack, layer); global row ``r`` of shard ``k`` is ``offset[k] + local row``."""

    def __init__(self, paths: list[Path]):
        self.readers = [TensorReader(p) for p in paths]
        if not self.readers:
            raise KeyError("no tensor files")
        self.dtype = self.readers[0].dtype
        self.path = self.readers[0].path
        self._offsets: dict[tuple[str, int], np.ndarray] = {}

    def offsets(self, stack: str, layer: int) -> np.ndarray:
        """``[n_shards + 1]`` cumulative row counts."""
        key = (stack, layer)
        if key not in self._offsets:
            n = [r.shape(stack, layer)[0] for r in self.readers]
            self._offsets[key] = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
        return self._offsets[key]

    def shape(self, stack: str, layer: int) -> tuple[int, int]:
        return int(self.offsets(stack, layer)[-1]), self.readers[0].shape(stack, layer)[1]

    def dataset(self, stack: str, layer: int):
        """The h5py dataset when the run has one shard (raw readers use it)."""
        if len(self.readers) != 1:
            raise ValueError("this run has several shards; use shard_datasets()")
        return self.readers[0].dataset(stack, layer)

    def shard_datasets(self, stack: str, layer: int) -> list:
        return [r.dataset(stack, layer) for r in self.readers]

    def read(self, stack: str, layer: int, rows: slice | np.ndarray | None = None,
             neurons: np.ndarray | list[int] | None = None) -> np.ndarray:
        """float32 ``[n_rows, n_neurons]`` at global rows (a slice or sorted/unsorted indices)."""
        off = self.offsets(stack, layer)
        if len(self.readers) == 1:
            return self.readers[0].read(stack, layer, rows, neurons)
        if rows is None or isinstance(rows, slice):
            start, stop, step = (rows or slice(None)).indices(int(off[-1]))
            if step != 1:
                rows = np.arange(start, stop, step)
            else:
                parts = []
                for k, r in enumerate(self.readers):
                    a, b = max(start, off[k]), min(stop, off[k + 1])
                    if a < b:
                        parts.append(r.read(stack, layer, slice(a - off[k], b - off[k]), neurons))
                if parts:
                    return np.concatenate(parts)
                width = len(neurons) if neurons is not None else self.shape(stack, layer)[1]
                return np.zeros((0, width), np.float32)
        idx = np.asarray(rows, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        shard = np.searchsorted(off, sorted_idx, side="right") - 1
        width = len(neurons) if neurons is not None else self.shape(stack, layer)[1]
        out = np.empty((idx.size, width), np.float32)
        for k in np.unique(shard):
            sel = shard == k
            local = sorted_idx[sel] - off[k]
            out[order[sel]] = self.readers[k].read(stack, layer, local, neurons)
        return out

    def iter_chunks(self, stack: str, layer: int, chunk_rows: int | None = None,
                    neurons: np.ndarray | list[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(global_start_row, float32 [n, d])`` blocks, shard by shard."""
        off = self.offsets(stack, layer)
        for k, r in enumerate(self.readers):
            for start, block in r.iter_chunks(stack, layer, chunk_rows, neurons):
                yield int(off[k]) + start, block

    def close(self) -> None:
        for r in self.readers:
            r.close()
