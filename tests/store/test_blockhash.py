"""The block checksum of tensor files (neurondb.store.blockhash): computed while HDF5 writes,
it must equal the checksum of the finished file read from disk, whatever the write pattern
(overwrites of hashed blocks, holes, truncation); verify checks it, and records of the older
whole-file sha256 still verify."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from neurondb.store import blockhash
from neurondb.store.blockhash import WatchedFile, block_sha256_file
from neurondb.store.tensors import TensorReader, TensorWriter
from neurondb.store.verify import _file_problem


def naive(path, block: int) -> str:
    data = open(path, "rb").read()
    return hashlib.sha256(b"".join(hashlib.sha256(data[i:i + block]).digest()
                                   for i in range(0, len(data), block))).hexdigest()


@pytest.mark.parametrize("seed", range(6))
def test_watched_file_matches_the_file_on_disk_for_random_writes(tmp_path, seed):
    rng = np.random.default_rng(seed)
    block = 64
    w = WatchedFile(tmp_path / "f", block_bytes=block)
    for _ in range(200):
        op = rng.integers(0, 10)
        if op < 7:  # a write anywhere, often past the end (a hole) or over hashed blocks
            w.seek(int(rng.integers(0, max(1, w.size + 3 * block))))
            w.write(rng.bytes(int(rng.integers(1, 3 * block))))
        elif op < 9:
            w.settle()
        else:
            w.truncate(int(rng.integers(0, w.size + 2 * block)))
    rec = w.finish()
    assert rec["bytes"] == os.path.getsize(tmp_path / "f")
    assert rec["sha256_blocks"] == naive(tmp_path / "f", block) == \
        block_sha256_file(tmp_path / "f", block)


@pytest.mark.parametrize("cut", [0, 24, 32, 40, 80])
def test_truncating_hashed_blocks_then_growing(tmp_path, cut):
    w = WatchedFile(tmp_path / "f", block_bytes=16)
    w.write(bytes(range(48)))
    w.settle()  # blocks 0-2 hashed
    w.truncate(cut)  # into a hashed block, on a boundary, or past the end (zeros)
    rec = w.finish()
    assert rec["bytes"] == cut and rec["sha256_blocks"] == naive(tmp_path / "f", 16)


def test_empty_file_and_read_back(tmp_path):
    w = WatchedFile(tmp_path / "e", block_bytes=16)
    assert w.finish()["sha256_blocks"] == hashlib.sha256(b"").hexdigest()
    w = WatchedFile(tmp_path / "r", block_bytes=16)
    w.write(b"0123456789")
    w.seek(2)
    buf = bytearray(4)
    assert w.readinto(buf) == 4 and bytes(buf) == b"2345" and w.tell() == 6
    w.seek(-3, os.SEEK_END)
    assert w.read() == b"789"
    w.finish()


@pytest.mark.parametrize("widths,dtype,n", [((70, 64, 5), "float32", 37),
                                            ((130,), "float16", 200),
                                            ((256, 256), "bfloat16", 1)])
def test_tensor_writer_record_values_and_chunking(tmp_path, monkeypatch, widths, dtype, n):
    """Direct chunk writes: the values read back are the rows appended (widths not a
    multiple of 64, narrower than 64, partial last row blocks), and the record the writer
    returns is the file's checksum on disk."""
    monkeypatch.setattr(blockhash, "SYNC_BYTES", 1)  # fdatasync on every settle
    import torch

    from neurondb.store.codec import encode
    rng = np.random.default_rng(0)
    want = {i: rng.standard_normal((n, d)).astype(np.float32) for i, d in enumerate(widths)}
    p = tmp_path / "t.h5"
    w = TensorWriter(p, {"encoder": widths}, dtype, {"encoder": 16})
    for i, a in want.items():
        for s in range(0, n, 7):  # uneven appends across chunk-row blocks
            w.append("encoder", i, encode(torch.from_numpy(a[s:s + 7]), dtype))
    rec = w.close()
    assert rec == {"bytes": p.stat().st_size, "sha256_blocks": block_sha256_file(p),
                   "block_bytes": blockhash.BLOCK_BYTES}
    r = TensorReader(p)
    tol = {"float32": 0, "float16": 1e-3, "bfloat16": 1e-2}[dtype]
    for i, a in want.items():
        got = r.read("encoder", i)
        assert got.shape == a.shape
        np.testing.assert_allclose(got, a, rtol=tol, atol=tol)
        assert r.dataset("encoder", i).chunks[1] == min(64, widths[i])
        if dtype == "float32":
            np.testing.assert_array_equal(r.read("encoder", i, rows=np.array([n - 1, 0]),
                                                 neurons=[widths[i] - 1, 0]),
                                          a[[n - 1, 0]][:, [widths[i] - 1, 0]])


def test_verify_checks_block_records_and_older_sha256_records(tmp_path):
    p = tmp_path / "t.h5"
    w = TensorWriter(p, {"encoder": (96,)}, "float32", {"encoder": 64})
    w.append("encoder", 0, np.ones((50, 96), np.float32))
    rec = w.close()
    old = {"bytes": rec["bytes"], "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    assert _file_problem(p, rec, True) is None and _file_problem(p, old, True) is None
    data = bytearray(p.read_bytes())
    for at in (0, len(data) // 2, len(data) - 1):  # the superblock, a chunk, the end
        bad = bytearray(data)
        bad[at] ^= 0x01
        p.write_bytes(bytes(bad))
        for r in (rec, old):
            assert "does not match its checksum" in _file_problem(p, r, True)
    p.write_bytes(bytes(data))
    assert _file_problem(p, json.loads(json.dumps(rec)), True) is None


def test_shard_records_the_tensor_block_checksum(tmp_path, tiny_path, sentiment_dir):
    import neurondb

    out = tmp_path / "s"
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, positions="mask",
                     template="{text} It was {mask}.", verbalizer=["bad", "good"],
                     progress=False).close()
    shard = next((out / "runs").glob("*/shards/c*"))
    files = json.loads((shard / "shard.json").read_text())["files"]
    assert set(files["activations.h5"]) == {"bytes", "sha256_blocks", "block_bytes"}
    assert files["activations.h5"]["sha256_blocks"] == block_sha256_file(shard / "activations.h5")
    assert set(files["examples.parquet"]) == {"bytes", "sha256"}


def test_without_preadv_and_fdatasync(tmp_path, monkeypatch):
    """Where the OS lacks them (macOS has no fdatasync): pread and fsync instead."""
    monkeypatch.delattr(os, "preadv", raising=False)
    monkeypatch.delattr(os, "fdatasync", raising=False)
    monkeypatch.setattr(blockhash, "SYNC_BYTES", 1)
    w = WatchedFile(tmp_path / "f", block_bytes=32)
    w.write(bytes(range(200)))
    w.settle()
    w.seek(10)
    buf = bytearray(5)
    assert w.readinto(buf) == 5 and bytes(buf) == bytes(range(10, 15))
    assert w.finish()["sha256_blocks"] == naive(tmp_path / "f", 32)


@pytest.mark.parametrize("block", ["x", 0, -5, None, 1.5, [1], True, 10**30])
def test_a_malformed_block_record_is_a_finding_not_a_crash(tmp_path, block):
    """shard.json is read, not trusted: a block size that is not a sane integer is reported
    (verify and open never raise on it)."""
    p = tmp_path / "t.h5"
    w = TensorWriter(p, {"encoder": (8,)}, "float32", {"encoder": 16})
    w.append("encoder", 0, np.ones((4, 8), np.float32))
    rec = dict(w.close(), block_bytes=block)
    assert "malformed checksum record" in _file_problem(p, rec, True)
    assert "malformed checksum record" in _file_problem(p, rec, None)  # small: hashed on open
