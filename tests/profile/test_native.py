"""The profile's CPU kernel (neurondb.profile.native) against the torch reduction it replaces:
the same state (bit for bit but the float64 sums, which add in another order), whatever the
thread count, tile edges or K; the fallback without a compiler; compiling from two processes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from neurondb.profile import native
from neurondb.profile.edges import choose_edges
from neurondb.profile.reduce import ProfileAccumulator

pytestmark = pytest.mark.skipif(native._load() is None, reason=f"no CPU kernel: {native._why_not}")


def batches(widths: dict, n_batches: int = 4, n: int = 70, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n_batches):
        acts = {}
        for s, ws in widths.items():
            for la, d in enumerate(ws):
                x = (rng.integers(-6, 7, size=(n, d)) / 4).astype(np.float32)  # many ties
                x[:, : min(3, d)] *= rng.normal(size=(n, min(3, d))).astype(np.float32)
                x[::5, -1] = -0.0
                if b == 2 and la == 1:
                    x[3, 0], x[4, 1], x[5, 2] = np.nan, np.inf, -np.inf
                acts[(s, la)] = torch.from_numpy(x)
        tok = rng.permutation(10_000)[:n]
        ex, pos = tok // 40, tok % 40
        lab = np.where(rng.random(n) < 0.2, -1, ex % 3)
        out.append((acts, {s: (ex, pos, lab) for s in widths}))
    return out


def state(widths, data, k: int, mode: str, monkeypatch, threads: int | None = None,
          openmp: bool | None = None):
    monkeypatch.setenv(native.ENV_KERNEL, mode)

    def edges_for(acts):
        return {key: choose_edges(-2.0, 2.0, 12) for key in acts}

    acc = ProfileAccumulator(widths, k, 12, 3, 40, "cpu", edges_for)
    assert (acc.native is not None) == (mode == "native")
    if threads is not None or openmp is not None:
        acc.native = native.NativeReducer(threads, openmp)
    for acts, rows in data:
        acc.update_batch(acts, rows)
    return acc.state()


def assert_same(a, b, exact_sums: bool):
    assert sorted(a.layers) == sorted(b.layers)
    for key, la in a.layers.items():
        lb = b.layers[key]
        assert la.count == lb.count
        for name in ("min", "max", "n_positive", "hist", "label_count"):
            np.testing.assert_array_equal(getattr(la, name), getattr(lb, name), err_msg=name)
        for kind in ("top", "bottom"):
            np.testing.assert_array_equal(la.keys[kind], lb.keys[kind], err_msg=kind)
        for name in ("sum", "sumsq", "label_sum"):  # NaN and ±inf in their own label only
            x, y = getattr(la, name), getattr(lb, name)
            if exact_sums:
                np.testing.assert_array_equal(x, y, err_msg=name)
            else:
                np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("k", [1, 5, 300])  # 300: more than the tokens of a batch
def test_kernel_equals_the_torch_reduction(k, monkeypatch):
    widths = {"encoder": (37, 37, 5), "decoder": (70,)}  # widths across tile edges
    data = batches(widths)
    assert_same(state(widths, data, k, "torch", monkeypatch),
                state(widths, data, k, "native", monkeypatch), exact_sums=False)


@pytest.mark.parametrize("openmp", [True, False])  # torch's OpenMP threads, or a pool
def test_thread_count_does_not_change_a_bit(monkeypatch, openmp):
    widths = {"encoder": (130, 130)}
    data = batches(widths, seed=1)
    one = state(widths, data, 4, "native", monkeypatch, threads=1, openmp=False)
    for t in (1, 2, 3, 5):
        assert_same(one, state(widths, data, 4, "native", monkeypatch, threads=t,
                               openmp=openmp), exact_sums=True)


def test_openmp_runtimes_are_told_apart():
    """The kernel uses OpenMP only where one runtime is loaded (torch's): two would be two
    sets of threads on the same cores."""
    maps = ("7f00-7f01 r-xp 0 08:01 1 /venv/torch/lib/libgomp.so.1\n"
            "7f01-7f02 r--p 0 08:01 1 /venv/torch/lib/libgomp.so.1\n"
            "7f02-7f03 r-xp 0 08:01 2 /usr/lib/libc.so.6\n"
            "7f03-7f04 rw-p 0 00:00 0 [heap]\n")
    assert native.openmp_runtimes(maps) == {"/venv/torch/lib/libgomp.so.1"}
    two = maps + "7f05-7f06 r-xp 0 08:01 3 /usr/lib/x86_64-linux-gnu/libgomp.so.1\n"
    assert len(native.openmp_runtimes(two)) == 2
    assert native.openmp_runtimes(maps + "7f07 r-xp 0 08:01 4 /opt/libiomp5.so\n") == {
        "/venv/torch/lib/libgomp.so.1", "/opt/libiomp5.so"}
    if "parallel backend: OpenMP" in torch.__config__.parallel_info() and \
            native._load().nd_openmp_threads() > 0:  # this process: torch's libgomp only
        assert native.shares_torch_threads()


def test_16_bit_and_non_contiguous_inputs(monkeypatch):
    widths = {"encoder": (33,)}
    data = batches(widths, seed=2)
    low = [({k: v.to(torch.bfloat16) for k, v in a.items()}, r) for a, r in data]
    strided = [({k: v.t().contiguous().t() for k, v in a.items()}, r) for a, r in data]
    ref = state(widths, [({k: v.float() for k, v in a.items()}, r) for a, r in low], 3,
                "torch", monkeypatch)
    assert_same(ref, state(widths, low, 3, "native", monkeypatch), exact_sums=False)
    assert_same(state(widths, data, 3, "torch", monkeypatch),
                state(widths, strided, 3, "native", monkeypatch), exact_sums=False)


def test_without_a_compiler_the_torch_reduction_runs(monkeypatch):
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_compiler", lambda: None)
    monkeypatch.setenv(native.ENV_KERNEL, "auto")
    assert not native.available() and "no C compiler" in native.why_not()
    acc = ProfileAccumulator({"encoder": (4,)}, 2, 4, 0, 8, "cpu",
                             lambda a: {k: choose_edges(-1, 1, 4) for k in a})
    assert acc.native is None
    monkeypatch.setenv(native.ENV_KERNEL, "native")
    with pytest.raises(RuntimeError, match="no C compiler"):
        native.available()


COMPILE = """
import sys
from neurondb.profile import native
assert native._load() is not None, native._why_not
print(native._build(native._compiler()))
"""


def test_two_processes_compiling_at_once_both_load_one_library(tmp_path, monkeypatch):
    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", COMPILE], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len({o.strip() for o, _ in outs}) == 1
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []  # no leftovers


def test_a_damaged_cached_library_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path))
    lib = native._build(native._compiler())
    lib.write_bytes(b"not a library")
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    assert native._load() is not None
    assert lib.stat().st_size > 1000


def test_the_portable_build_gives_the_same_state(tmp_path, monkeypatch):
    """Without -march=native (another compiler, another CPU) the kernel's vectors are split
    into whatever registers exist; the state is the same."""
    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path))
    portable = native._flags(native_cpu=False)
    monkeypatch.setattr(native, "_flags", lambda native_cpu=True, openmp=True: portable)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    widths = {"encoder": (21, 40)}
    data = batches(widths, seed=3)
    assert_same(state(widths, data, 3, "torch", monkeypatch),
                state(widths, data, 3, "native", monkeypatch), exact_sums=False)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".so"]  # built here, portable


def test_handing_over_the_models_tensors_equals_copied_rows(monkeypatch):
    """begin_batch / consume / end_batch (what the capture hooks do when nothing else needs
    the rows) give the state of update_batch on the copied rows, also when a layer cannot be
    read in place (bfloat16: the hook copies its rows as usual)."""
    monkeypatch.setenv(native.ENV_KERNEL, "native")
    widths = {"encoder": (24, 24, 24)}
    rng = np.random.default_rng(4)
    B, T = 3, 7

    def acc():
        return ProfileAccumulator(widths, 4, 12, 3, 40, "cpu",
                                  lambda acts: {k: choose_edges(-2.0, 2.0, 12) for k in acts})

    copied, handed = acc(), acc()
    for step in range(3):
        h = {("encoder", la): torch.from_numpy(rng.normal(size=(B, T, 24)).astype(np.float32))
             for la in range(3)}
        h[("encoder", 1)] = h[("encoder", 1)].to(torch.bfloat16)  # not readable in place
        keep = rng.random((B, T)) < 0.7
        b, t = (torch.as_tensor(a) for a in np.nonzero(keep))
        ex, pos = b.numpy() + 10 * step, t.numpy()
        rows = {"encoder": (ex, pos, ex % 3)}
        rowsof = {k: v[b, t] for k, v in h.items()}
        copied.update_batch(rowsof, rows)
        if not handed.can_stream():  # the first batch chooses the edges
            handed.update_batch(rowsof, rows)
            continue
        handed.begin_batch(rows)
        acts = {k: v[b, t] for k, v in h.items() if not handed.consume(k, v, b, t)}
        assert list(acts) == [("encoder", 1)]
        handed.end_batch(acts)
    assert_same(copied.state(), handed.state(), exact_sums=False)


def test_reducing_its_own_rows_while_the_hooks_store_a_twins(monkeypatch):
    """``where`` (a per-token twin in the same pass): the hooks select the twin's rows, the
    accumulator reduces the profile's from ``h`` (copied first where ``h`` cannot be read in
    place) and lets every hook store the twin's. The state is that of the copied rows."""
    monkeypatch.setenv(native.ENV_KERNEL, "native")
    widths = {"encoder": (24, 24)}
    rng = np.random.default_rng(7)
    B, T = 3, 6

    def acc():
        return ProfileAccumulator(widths, 4, 12, 3, 40, "cpu",
                                  lambda acts: {k: choose_edges(-2.0, 2.0, 12) for k in acts})

    copied, handed = acc(), acc()
    for step in range(3):
        h = {("encoder", la): torch.from_numpy(rng.normal(size=(B, T, 24)).astype(np.float32))
             for la in range(2)}
        h[("encoder", 1)] = h[("encoder", 1)].to(torch.bfloat16)  # copied, then reduced
        b, t = (torch.as_tensor(a) for a in np.nonzero(rng.random((B, T)) < 0.7))
        tb, tt = torch.arange(B), torch.zeros(B, dtype=torch.long)  # the twin: position 0
        ex, pos = b.numpy() + 10 * step, t.numpy()
        rows = {"encoder": (ex, pos, ex % 3)}
        copied.update_batch({k: v[b, t] for k, v in h.items()}, rows)
        if not handed.can_stream():
            handed.update_batch({k: v[b, t] for k, v in h.items()}, rows)
            continue
        handed.begin_batch(rows, {"encoder": (b.numpy(), t.numpy())})
        assert not any(handed.consume(k, v, tb, tt) for k, v in h.items())  # all stored
        handed.end_batch({})
    assert_same(copied.state(), handed.state(), exact_sums=False)


def test_a_forward_that_fails_half_way_leaves_no_state(monkeypatch):
    """Layers are reduced inside their hooks: a batch whose forward fails after some of them
    leaves a partial batch in the accumulator, which then refuses to give a state (its shard
    is redone); a failure before any layer was reduced leaves it usable."""
    from neurondb.extract.profiling import reducing

    monkeypatch.setenv(native.ENV_KERNEL, "native")
    widths = {"encoder": (8, 8)}
    acc = ProfileAccumulator(widths, 2, 4, 0, 16, "cpu",
                             lambda a: {k: choose_edges(-1.0, 1.0, 4) for k in a})
    h = torch.randn(2, 3, 8)
    b, t = (torch.as_tensor(a) for a in np.nonzero(np.ones((2, 3), bool)))
    acc.update_batch({("encoder", la): h[b, t] for la in range(2)},
                     {"encoder": (b.numpy(), t.numpy(), -np.ones(6, np.int64))})

    class Cap:
        consume = None
        acts: dict = {}

    rows = {"encoder": (b.numpy() + 2, t.numpy(), -np.ones(6, np.int64))}
    with pytest.raises(KeyboardInterrupt), reducing(acc, Cap, rows):
        raise KeyboardInterrupt  # before any layer
    assert acc.state().layers[("encoder", 0)].count == 6
    with pytest.raises(KeyboardInterrupt), reducing(acc, Cap, rows):
        assert Cap.consume(("encoder", 0), h, b, t)
        raise KeyboardInterrupt  # after layer 0, before layer 1
    with pytest.raises(RuntimeError, match="interrupted batch"):
        acc.state()


def test_an_unwritable_cache_falls_back_to_the_torch_reduction(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    monkeypatch.setenv(native.ENV_CACHE, str(blocker / "kernels"))
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setenv(native.ENV_KERNEL, "auto")
    assert not native.available()
    assert "could not be built" in native.why_not()
    widths = {"encoder": (9,)}
    data = batches(widths, n_batches=2, seed=5)
    st = state(widths, data, 2, "torch", monkeypatch)  # still reduces, the torch way
    assert st.layers[("encoder", 0)].count == 140


def test_int32_counts_are_moved_before_they_could_overflow(monkeypatch):
    from neurondb.profile import reduce

    monkeypatch.setattr(reduce, "MAX_INT32_ROWS", 100)  # a move every batch or two
    widths = {"encoder": (20,)}
    data = batches(widths, n_batches=5, seed=6)
    assert_same(state(widths, data, 3, "torch", monkeypatch),
                state(widths, data, 3, "native", monkeypatch), exact_sums=False)


def test_torch_label_sums_keep_non_finite_values_in_their_own_label():
    """Row by row (the kernel): a NaN or ±inf reaches its row's label only; +inf and -inf in
    one label make NaN. A one-hot matmul alone would make every label NaN."""
    from neurondb.profile.reduce import _label_sums

    inf, nan = float("inf"), float("nan")
    x = torch.tensor([[[1.0, inf, 2.0, nan]], [[2.0, -inf, -inf, 1.0]],
                      [[4.0, 1.0, inf, 1.0]]], dtype=torch.float64).transpose(0, 1)  # [1, 3, 4]
    lab = torch.tensor([0, 0, 1])
    onehot = (lab[:, None] == torch.arange(3)).double()
    want = np.zeros((1, 3, 4))
    with np.errstate(invalid="ignore"):  # inf + -inf: NaN, as wanted
        for i, la in enumerate(lab.tolist()):
            want[0, la] += x[0, i].numpy()
    np.testing.assert_array_equal(_label_sums(onehot, x).numpy(), want)
    assert np.isnan(want[0, 0, 1]) and want[0, 1, 2] == inf and np.isnan(want[0, 0, 3])


def test_an_openmp_build_that_cannot_be_loaded_falls_back_to_one_without(tmp_path, monkeypatch):
    """A libgomp the loader refuses (another version than the process has) is not the end of
    the kernel: it is built again without OpenMP, and the reducer splits neurons itself."""
    import ctypes

    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    built: dict[str, bool] = {}
    real_build, real_cdll = native._build, ctypes.CDLL

    def build(cc, openmp=True):
        p = real_build(cc, openmp)
        built[str(p)] = openmp
        return p

    def cdll(path, *a, **k):
        if built.get(str(path)):
            raise OSError(f"{path}: version `GOMP_9.9' not found")
        return real_cdll(path, *a, **k)

    monkeypatch.setattr(native, "_build", build)
    monkeypatch.setattr(ctypes, "CDLL", cdll)
    lib = native._load()
    assert lib is not None and lib.nd_openmp_threads() == 0
    assert sorted(built.values()) == [False, True]
    assert not native.shares_torch_threads()
    monkeypatch.setattr(ctypes, "CDLL", real_cdll)
    widths = {"encoder": (40,)}
    data = batches(widths, n_batches=2, seed=6)
    assert_same(state(widths, data, 3, "torch", monkeypatch),
                state(widths, data, 3, "native", monkeypatch), exact_sums=False)
