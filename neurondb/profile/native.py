"""The profile reduction's CPU kernel: ``native_kernel.c``, compiled on first use and cached.

On the CPU the torch reduction touches every value about ten times (float64 sums, min/max,
sign count, binning, two ``topk``s); the kernel reads each value once, sixteen neurons to a
vector register (sums, extremes and sign counts stay in registers over a call's rows), and keeps
the top/bottom-K as per-neuron min-heaps in the state itself (sorted best first by
:func:`sorted_keys` when the state is read). It computes the same
state as :meth:`neurondb.profile.reduce.ProfileAccumulator.update` (the same keys, bins and
NaN rules; the float64 sums add in row order, equal to about 1e-16 relative), and is used for
CPU tensors when a C compiler is found (``cc``, ``gcc`` or ``clang``, or ``$CC``). Otherwise,
or with ``NEURONDB_PROFILE_KERNEL=torch``, the torch reduction runs (the same numbers, slower).

Threads: built with ``-fopenmp`` (when the compiler has it), the kernel's ``libgomp.so.1``
resolves to the one torch loaded, so its parallel loop runs on torch's own threads, still
spinning after the model's last operation (:func:`shares_torch_threads`); a second set of
threads would compete with them for the same cores. Where that is not so, the neurons are split
among a pool of the reducer's own.

The shared library is cached in ``$NEURONDB_KERNEL_CACHE`` (default
``~/.cache/neurondb/kernels``) under a name that hashes the source, the compiler's version and
the CPU's flags, so a changed source or another machine type compiles again. The library is
written to a temporary name and renamed, so processes that compile at once (torchrun ranks)
cannot see a partial file.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

SOURCE = Path(__file__).with_name("native_kernel.c")
ENV_KERNEL = "NEURONDB_PROFILE_KERNEL"  # "torch": never use the kernel; "native": require it
ENV_CACHE = "NEURONDB_KERNEL_CACHE"

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_why_not = ""


def _compiler() -> str | None:
    for c in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if c and shutil.which(c):
            return c
    return None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _flags(native_cpu: bool = True, openmp: bool = True) -> list[str]:
    """-O3 and vectorisation (``-fno-trapping-math`` lets ``floorf`` vectorise; no
    ``-ffast-math``: NaN and signed zeros keep their meaning); ``-march=native`` is safe to
    cache because the library's name hashes the CPU's flags; ``-fopenmp`` for
    ``nd_profile_update_all`` (see :func:`shares_torch_threads`)."""
    arch = ["-march=native"] if native_cpu else []
    omp = ["-fopenmp"] if openmp else []
    return ["-O3", *arch, *omp, "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off",
            "-Wno-psabi", "-shared", "-fPIC"]


def _build(cc: str, openmp: bool = True) -> Path:
    src = SOURCE.read_bytes()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    tag = hashlib.sha256(b"\0".join([src, version.encode(), _cpu_flags().encode(),
                                     " ".join(_flags(True, openmp)).encode()])).hexdigest()[:16]
    cache = Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "neurondb" / "kernels")
    lib = cache / f"profile-{tag}.so"
    if lib.exists():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".profile-", suffix=".so")
    os.close(fd)
    try:
        # a compiler without -march=native: the portable build; without OpenMP: one thread
        # per call (the caller's threads split the neurons)
        for native_cpu, omp in ((True, True), (True, False), (False, True), (False, False)):
            if omp and not openmp:
                continue
            r = subprocess.run([cc, *_flags(native_cpu, omp), "-o", tmp, str(SOURCE), "-lm"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
        else:
            raise OSError(f"{cc} failed: {r.stderr.strip()[:300]}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def _load() -> ctypes.CDLL | None:
    global _lib, _tried, _why_not
    with _lock:
        if _tried:
            return _lib
        _tried = True
        cc = _compiler()
        if cc is None:
            _why_not = "no C compiler (cc, gcc, clang or $CC) found"
            return None
        try:
            path = _build(cc)
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:  # a damaged cached library: build it again, once
                path.unlink(missing_ok=True)
                path = _build(cc)
                try:
                    lib = ctypes.CDLL(str(path))
                except OSError:  # an OpenMP runtime that cannot be loaded here: without it
                    path.unlink(missing_ok=True)
                    lib = ctypes.CDLL(str(_build(cc, openmp=False)))
        except OSError as e:
            _why_not = f"the profile kernel could not be built: {e}"
            return None
        state = ([ctypes.c_void_p] * 4 + [ctypes.c_int32] + [ctypes.c_void_p] * 6
                 + [ctypes.c_int32] + [ctypes.c_void_p] * 5 + [ctypes.c_int32])
        lib.nd_profile_update.restype = ctypes.c_int
        lib.nd_profile_update.argtypes = [ctypes.c_int64] * 5 + state
        lib.nd_profile_update_all.restype = ctypes.c_int
        lib.nd_profile_update_all.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_int32] + state
        lib.nd_tile.restype = ctypes.c_int
        lib.nd_openmp_threads.restype = ctypes.c_int
        _lib = lib
        return _lib


def available() -> bool:
    """True when the CPU kernel is used (compiled now if it was not yet)."""
    mode = os.environ.get(ENV_KERNEL, "auto")
    if mode == "torch":
        return False
    ok = _load() is not None
    if mode == "native" and not ok:
        raise RuntimeError(f"{ENV_KERNEL}=native but {_why_not}")
    return ok


def why_not() -> str:
    """Why the kernel is not used ("" when it is)."""
    return "" if available() else (_why_not or f"{ENV_KERNEL}=torch")


#: the OpenMP runtimes a process may have mapped (GNU, LLVM, Intel)
_OMP_RUNTIMES = ("libgomp", "libomp", "libiomp")


def shares_torch_threads() -> bool:
    """Whether the kernel's OpenMP threads are torch's own: the library was built with OpenMP,
    torch's parallel backend is OpenMP, and one OpenMP runtime is loaded in this process (the
    kernel's ``libgomp.so.1`` resolved to torch's). Two runtimes would mean two sets of
    threads on the same cores; the kernel then splits the neurons among threads of its own."""
    lib = _load()
    if lib is None or lib.nd_openmp_threads() <= 0:
        return False
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return False
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return len(openmp_runtimes(maps)) == 1


def openmp_runtimes(maps: str) -> set[str]:
    """The OpenMP runtime libraries mapped, from the text of ``/proc/self/maps``."""
    return {line.split()[-1] for line in maps.splitlines() if "/" in line
            and any(line.rsplit("/", 1)[-1].startswith(name) for name in _OMP_RUNTIMES)}


def _ptr(t: torch.Tensor) -> int:
    assert t.is_contiguous() and t.device.type == "cpu", "the kernel needs contiguous CPU memory"
    return t.data_ptr()


def sorted_keys(keys: np.ndarray) -> np.ndarray:
    """The kernel's per-neuron min-heaps of keys ``[..., K]``, best first (the state's order)."""
    return np.ascontiguousarray(np.sort(keys, axis=-1)[..., ::-1])


class NativeReducer:
    """Runs the kernel on ``threads`` threads (default: torch's count). Where the kernel's
    OpenMP is torch's (:func:`shares_torch_threads`), one call shares the neurons out among
    torch's own threads; otherwise the calling thread and a pool of its own run calls on
    disjoint neuron ranges (ctypes releases the GIL during a call). ``openmp`` forces
    either way (tests)."""

    def __init__(self, threads: int | None = None, openmp: bool | None = None):
        self.lib = _load()
        if self.lib is None:
            raise RuntimeError(_why_not)
        self.tile = int(self.lib.nd_tile())
        self.threads = max(1, int(threads or torch.get_num_threads()))
        self.openmp = shares_torch_threads() if openmp is None else bool(openmp)
        self.pool = (ThreadPoolExecutor(self.threads - 1) if self.threads > 1 and not self.openmp
                     else None)

    def update(self, st: dict[str, torch.Tensor], xs: list[torch.Tensor], tok: torch.Tensor,
               label: torch.Tensor, n_labels: int, n_bins: int, top_k: int,
               rows: torch.Tensor | None = None) -> None:
        """Reduce ``xs`` (G float32 ``[n, d]``, contiguous, CPU) into the group state ``st``
        (the views of :class:`~neurondb.profile.reduce.ProfileAccumulator` for these G
        layers: ``sum`` ``[G, d]`` ..., ``hist32`` int32 ``[G * d * (N+2)]`` (the caller moves
        them into ``hist`` before they could overflow), ``top`` ``[G, d, K]``,
        kept as a min-heap per neuron: :func:`sorted_keys` puts them best first),
        with the rows' int64 tokens and int32 labels ``[n]`` (-1: none). With ``rows``
        (int64 ``[n]``), ``xs`` are whole ``[R, d]`` activations and row ``i`` is
        ``x[rows[i]]``."""
        G, d = len(xs), xs[0].shape[-1]
        n = int(tok.shape[0])
        rows_ptr = None
        if rows is not None:  # the kernel reads x[rows[i]] for i < n: checked, not trusted
            rows = rows.contiguous()
            assert rows.dtype == torch.int64 and rows.shape == (n,), (rows.shape, n)
            assert n == 0 or 0 <= int(rows.min()) and int(rows.max()) < xs[0].shape[0], \
                "a row index outside the activations"
            rows_ptr = _ptr(rows)
        assert all(x.shape == xs[0].shape for x in xs) and label.shape[0] == n
        ptrs = (ctypes.c_void_p * G)(*[_ptr(x) for x in xs])
        tok, label = tok.contiguous(), label.to(torch.int32).contiguous()
        inv_w = st["inv_w"].reshape(-1).contiguous()
        m = st["m"].reshape(-1).contiguous()
        fixed = (ctypes.cast(ptrs, ctypes.c_void_p), rows_ptr, _ptr(tok), _ptr(label), int(n_labels), _ptr(st["sum"]),
                 _ptr(st["sumsq"]), _ptr(st["min"]), _ptr(st["max"]), _ptr(st["n_positive"]),
                 _ptr(st["hist32"]), int(n_bins), _ptr(inv_w), _ptr(m), _ptr(st["label_sum"]),
                 _ptr(st["top"]), _ptr(st["bottom"]), int(top_k))
        if self.openmp:
            self.lib.nd_profile_update_all(G, n, d, self.threads, *fixed)
            return
        step = -(-d // self.threads)
        step = -(-step // self.tile) * self.tile
        ranges = [(a, min(d, a + step)) for a in range(0, d, step)]

        def run(r: tuple[int, int]) -> None:
            self.lib.nd_profile_update(G, n, d, r[0], r[1], *fixed)

        if self.pool is None or len(ranges) == 1:
            for r in ranges:
                run(r)
        else:  # the calling thread takes the first range itself instead of waiting idle
            others = [self.pool.submit(run, r) for r in ranges[1:]]
            try:
                run(ranges[0])
            finally:  # the state is not left while another thread still writes into it
                for f in others:
                    f.result()
