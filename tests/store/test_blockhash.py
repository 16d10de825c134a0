"""The block checksum of tensor files (neurondb.store.blockhash): computed while HDF5 writes
(appended bytes from the write buffers, the rest read back), it must equal the checksum of the
finished file read from disk, whatever the write pattern (overwrites of hashed blocks, holes,
truncation, appends out of order); verify checks it, and the older records (sha256 blocks, a
whole-file sha256) still verify."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import xxhash

from neurondb.store import blockhash
from neurondb.store.blockhash import WatchedFile, block_checksum_file
from neurondb.store.tensors import TensorReader, TensorWriter
from neurondb.store.verify import _file_problem


def naive(path, block: int, h=xxhash.xxh3_128) -> str:
    data = open(path, "rb").read()
    return h(b"".join(h(data[i:i + block]).digest()
                      for i in range(0, len(data), block))).hexdigest()


@pytest.mark.parametrize("seed", range(12))
def test_watched_file_matches_the_file_on_disk_for_random_writes(tmp_path, seed):
    rng = np.random.default_rng(seed)
    block = 64
    appends = seed % 2  # odd seeds: mostly appends in order (the tail), as HDF5 writes
    w = WatchedFile(tmp_path / "f", block_bytes=block)
    for _ in range(200):
        op = rng.integers(0, 10)
        if op < 7:  # a write anywhere, often past the end (a hole) or over hashed blocks
            at = (w.size if appends and rng.random() < 0.8
                  else int(rng.integers(0, max(1, w.size + 3 * block))))
            w.seek(at)
            w.write(rng.bytes(int(rng.integers(1, 3 * block))))
        elif op < 9:
            w.settle()
        else:
            w.truncate(int(rng.integers(0, w.size + 2 * block)))
    rec = w.finish()
    assert rec["bytes"] == os.path.getsize(tmp_path / "f")
    assert rec["xxh3_128_blocks"] == naive(tmp_path / "f", block) == \
        block_checksum_file(tmp_path / "f", block)


@pytest.mark.parametrize("piece", [1, 7, 64, 100, 1000])
def test_appended_blocks_are_hashed_from_the_buffers_not_read_back(tmp_path, piece):
    """Bytes appended in order, in any piece size, are never read back; a later write into
    a hashed block (HDF5's metadata at close) reads back only that block."""
    rng = np.random.default_rng(piece)
    w = WatchedFile(tmp_path / "f", block_bytes=64)
    data = rng.bytes(64 * 20 + 13)
    for i in range(0, len(data), piece):
        w.write(data[i:i + piece])
        w.settle()
    assert w.reread == 0 and len(w.digests) == 20
    w.seek(70)
    w.write(b"xy")  # into block 1
    w.settle()
    assert w.reread == 1
    rec = w.finish()
    assert w.reread == 1  # the short last block came from the tail too
    assert rec["xxh3_128_blocks"] == naive(tmp_path / "f", 64)


def test_a_hole_then_the_bytes_before_it(tmp_path):
    """HDF5 may write a chunk past bytes it has allocated but not yet written (a hole), then
    fill the hole: the checksum is the file's, and the appends after the hole are hashed
    from their buffers."""
    w = WatchedFile(tmp_path / "f", block_bytes=16)
    w.write(b"a" * 20)
    w.seek(40)
    w.write(b"b" * 60)  # past a hole [20, 40): a new tail at offset 48
    w.seek(20)
    w.write(b"c" * 20)  # the hole filled
    w.seek(100)
    for _ in range(4):
        w.write(b"d" * 8)
    rec = w.finish()
    assert rec["xxh3_128_blocks"] == naive(tmp_path / "f", 16)
    assert w.reread <= 3  # blocks 1 and 2 (the hole's), never the appended ones


@pytest.mark.parametrize("cut", [0, 24, 32, 40, 80])
def test_truncating_hashed_blocks_then_growing(tmp_path, cut):
    w = WatchedFile(tmp_path / "f", block_bytes=16)
    w.write(bytes(range(48)))
    w.settle()  # blocks 0-2 hashed
    w.truncate(cut)  # into a hashed block, on a boundary, or past the end (zeros)
    rec = w.finish()
    assert rec["bytes"] == cut and rec["xxh3_128_blocks"] == naive(tmp_path / "f", 16)


def test_empty_file_and_read_back(tmp_path):
    w = WatchedFile(tmp_path / "e", block_bytes=16)
    assert w.finish()["xxh3_128_blocks"] == xxhash.xxh3_128(b"").hexdigest()
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
    assert rec == {"bytes": p.stat().st_size, "xxh3_128_blocks": block_checksum_file(p),
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
    # the block records of 2026-12-04's stores: sha256 blocks
    older = {"bytes": rec["bytes"], "block_bytes": 16,
             "sha256_blocks": naive(p, 16, hashlib.sha256)}
    assert block_checksum_file(p, 16, "sha256_blocks") == older["sha256_blocks"]
    for r in (rec, old, older):
        assert _file_problem(p, r, True) is None
    data = bytearray(p.read_bytes())
    for at in (0, len(data) // 2, len(data) - 1):  # the superblock, a chunk, the end
        bad = bytearray(data)
        bad[at] ^= 0x01
        p.write_bytes(bytes(bad))
        for r in (rec, old, older):
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
    assert set(files["activations.h5"]) == {"bytes", "xxh3_128_blocks", "block_bytes"}
    assert files["activations.h5"]["xxh3_128_blocks"] == \
        block_checksum_file(shard / "activations.h5")
    assert set(files["examples.parquet"]) == {"bytes", "sha256"}


def test_written_back_pages_are_dropped_and_read_back_intact(tmp_path, monkeypatch):
    """Every SYNC_BYTES the written bytes are synced, then dropped from the page cache (so a
    long capture reuses pages instead of asking for fresh ones); never before they are
    synced, and what is read or hashed afterwards comes back from the disk intact."""
    calls = []
    real_sync, real_advise = blockhash._datasync, os.posix_fadvise
    monkeypatch.setattr(blockhash, "_datasync", lambda fd: (calls.append("sync"), real_sync(fd)))
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: (
        calls.append(("drop", off, n, advice)), real_advise(fd, off, n, advice)))
    monkeypatch.setattr(blockhash, "SYNC_BYTES", 100)
    w = WatchedFile(tmp_path / "f", block_bytes=32)
    data = bytes(range(256)) * 2
    w.write(data[:90])
    w.settle()
    assert calls == []  # under SYNC_BYTES: neither synced nor dropped
    w.write(data[90:])
    w.settle()
    assert calls == ["sync", ("drop", 0, 0, os.POSIX_FADV_DONTNEED)]
    w.seek(33)
    w.write(b"ab")  # into a block hashed and dropped: read back from the disk
    w.settle()
    w.seek(30)
    buf = bytearray(6)
    assert w.readinto(buf) == 6 and bytes(buf) == data[30:33] + b"ab" + data[35:36]
    assert w.finish()["xxh3_128_blocks"] == naive(tmp_path / "f", 32)


def test_without_preadv_fdatasync_and_fadvise(tmp_path, monkeypatch):
    """Where the OS lacks them (macOS has no fdatasync nor posix_fadvise): pread and fsync
    instead, and the pages are left to the OS."""
    monkeypatch.delattr(os, "preadv", raising=False)
    monkeypatch.delattr(os, "fdatasync", raising=False)
    monkeypatch.delattr(os, "posix_fadvise", raising=False)
    monkeypatch.setattr(blockhash, "SYNC_BYTES", 1)
    w = WatchedFile(tmp_path / "f", block_bytes=32)
    w.write(bytes(range(200)))
    w.settle()
    w.seek(10)
    buf = bytearray(5)
    assert w.readinto(buf) == 5 and bytes(buf) == bytes(range(10, 15))
    assert w.finish()["xxh3_128_blocks"] == naive(tmp_path / "f", 32)


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


def test_a_record_without_a_known_checksum_is_a_finding(tmp_path):
    """A record whose checksum this neurondb does not know (a newer kind, or none at all) is
    reported, not passed on its size alone."""
    p = tmp_path / "t.h5"
    w = TensorWriter(p, {"encoder": (8,)}, "float32", {"encoder": 16})
    w.append("encoder", 0, np.ones((4, 8), np.float32))
    rec = w.close()
    for bad in ({"bytes": rec["bytes"]},
                {"bytes": rec["bytes"], "blake9_blocks": "00", "block_bytes": 64}):
        msg = _file_problem(p, bad, True)
        assert "no checksum this neurondb knows" in msg and "upgrade neurondb" in msg
    assert _file_problem(p, {"bytes": rec["bytes"]}, False) is None  # sizes only
