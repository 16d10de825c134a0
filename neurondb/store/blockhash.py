"""The checksum of a file written in place: a digest of the digests of its blocks.

A whole-file digest can be computed only once a file is final, so an extraction's last shard
used to hash its tensor file (hundreds of MB) after the model had stopped running, with nothing
to overlap it. A tensor file is instead written through :class:`WatchedFile`, which sees every
byte HDF5 writes. Bytes appended in order are hashed from the buffer HDF5 hands over (never
read back); a block that HDF5 writes into again later (its metadata, at close), or whose bytes
came out of order, is hashed again from the page cache. The record a commit keeps is
``{"bytes": n, "xxh3_128_blocks": hex, "block_bytes": BLOCK_BYTES}``, and
:func:`block_checksum_file` computes the same value from the file alone (``neurondb verify``):

    digest = XXH3-128(XXH3-128(block_0) || XXH3-128(block_1) || ...)   (16-byte digests; the
             last block may be short; an empty file has no blocks)

XXH3 and not sha256: the checksum finds damage (a truncated, flipped or badly copied file),
not tampering (whoever can change a tensor file can change its ``shard.json`` too), and sha256
ran at 1.3 GB/s on the two-core machine whose cores torch already keeps busy: 0.16 s of CPU per
second of a prompt/mask capture (bench/RESULTS.md). XXH3 runs at tens of GB/s. Stores written
before it keep ``"sha256_blocks"`` (the same scheme with sha256) or a whole-file ``"sha256"``;
both still verify (:data:`BLOCK_KINDS`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import xxhash

BLOCK_BYTES = 256 << 10
SYNC_BYTES = 32 << 20  # written bytes between two fdatasync calls (the writeback overlaps too)
RECORD_KEY = "xxh3_128_blocks"
#: record key -> the block hash (a ``hashlib``-style constructor) of each kind of block record
BLOCK_KINDS: dict[str, Callable] = {RECORD_KEY: xxhash.xxh3_128, "sha256_blocks": hashlib.sha256}


def _datasync(fd: int) -> None:
    """``fdatasync`` (``fsync`` where the OS has none, as macOS)."""
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def _drop_cached(fd: int) -> None:
    """Let the kernel drop ``fd``'s clean pages from the page cache (just written back: they
    are on disk, and nothing reads a tensor file while it is written). A capture writes
    hundreds of MB per second of forward pass; kept, those pages make every later write take
    fresh ones and evict what other programs cache. Measured on this project's 2-core VM
    (``bench/RESULTS.md``): the ``pwrite`` CPU of a 700 MB capture 0.46-1.25 s kept, 0.34-0.38 s
    dropped. No-op where the OS has no ``posix_fadvise``."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _read_into(fd: int, buf: bytearray, offset: int) -> int:
    """Read up to ``len(buf)`` bytes at ``offset`` into ``buf`` (``preadv`` where the OS has
    it); returns the count."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buf], offset)
    data = os.pread(fd, len(buf), offset)
    buf[:len(data)] = data
    return len(data)


def combine(digests: list[bytes], kind: str = RECORD_KEY) -> str:
    """The file's checksum (hex) from its blocks' digests, in file order."""
    return BLOCK_KINDS[kind](b"".join(digests)).hexdigest()


def block_checksum_file(path: str | Path, block_bytes: int = BLOCK_BYTES,
                        kind: str = RECORD_KEY) -> str:
    """The block checksum of a file on disk (see the module docstring); ``kind``: a key of
    :data:`BLOCK_KINDS`."""
    new = BLOCK_KINDS[kind]
    digests = []
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(block_bytes), b""):
            digests.append(new(block).digest())
    return combine(digests, kind)


class WatchedFile:
    """A binary file for h5py's ``fileobj`` driver that keeps its block checksum current.

    Every write marks the blocks it touches (and any hole it opens) stale. Bytes appended in
    order also feed the running hash of the block they fall in (the *tail*: block
    ``tail_block``, fed up to offset ``tail_end``), so a block filled that way is hashed from
    HDF5's own buffer as it completes. A write into bytes the tail has already fed drops it
    (that block is then hashed from the file); a write that extends the file out of order
    starts a new tail at its first block boundary. :meth:`settle` hashes the stale blocks the
    file has grown past, reading them back from the page cache, and every :data:`SYNC_BYTES`
    starts their writeback (``fdatasync``) so that the commit's fsync has little left to do,
    then lets the page cache drop them (:func:`_drop_cached`).
    :meth:`finish` hashes what is still stale and returns the record. :attr:`reread` counts
    the blocks read back. The first operating-system error is kept in :attr:`error` (see
    :meth:`_failed`); after it, or after :meth:`discard`, writes go nowhere.
    """

    def __init__(self, path: str | Path, block_bytes: int = BLOCK_BYTES):
        self.path = Path(path)
        self.block = block_bytes
        self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.pos = 0
        self.size = 0
        self.stale: set[int] = set()
        self.digests: dict[int, bytes] = {}
        self.error: OSError | None = None
        self.discarded = False
        self.reread = 0
        self._new = BLOCK_KINDS[RECORD_KEY]
        self._tail = None  # the running hash of block tail_block, fed over [start, tail_end)
        self.tail_block = -1
        self.tail_end = -1
        self._unsynced = 0
        self._scratch = bytearray(block_bytes)

    # the file-object protocol h5py's fileobj driver calls
    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.pos = offset if whence == os.SEEK_SET else (
            self.pos + offset if whence == os.SEEK_CUR else self.size + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, b) -> int:
        n = _read_into(self._fd(), b, self.pos)
        self.pos += n
        return n

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else n
        data = os.pread(self._fd(), max(0, n), self.pos)
        self.pos += len(data)
        return data

    def write(self, b) -> int:
        view = memoryview(b).cast("B")
        n = len(view)
        if self.discarded:
            self.pos += n
            return n
        start, done = self.pos, 0
        try:
            while done < n:
                done += os.pwrite(self._fd(), view[done:], start + done)
        except OSError as e:
            self._failed(e)
            self.pos = start + n
            return n
        grows = start + n > self.size
        self._touched(start, start + n)
        self._feed(start, view, grows)
        self.pos = start + n
        self._unsynced += n
        return n

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if not self.discarded:
            try:
                os.ftruncate(self._fd(), size)
            except OSError as e:
                self._failed(e)
                return size
            if size < self.tail_end or size > self.size:
                self._drop_tail()  # cut into what the tail fed, or zeros it never saw
            if size < self.size:
                self.size = size
                for k in [k for k in self.digests if k * self.block >= size]:
                    del self.digests[k]
                self.stale = {k for k in self.stale if k * self.block < size}
                if size % self.block:
                    self._stale(size // self.block)
            else:
                self._touched(size, size)
        return size

    def flush(self) -> None:
        return None

    def _failed(self, e: OSError) -> None:
        """Keep the first error and write nothing more. HDF5 is told the write succeeded:
        h5py's driver, given an exception, leaves it set for its next callback (a
        SystemError); :class:`~neurondb.store.tensors.TensorWriter` raises :attr:`error`
        after the HDF5 call instead, and the file is only good for aborting."""
        self.error = self.error or e
        self.discarded = True

    # the checksum
    def _fd(self) -> int:
        if self.fd is None:
            raise ValueError(f"{self.path} is closed")
        return self.fd

    def _stale(self, k: int) -> None:
        self.stale.add(k)
        self.digests.pop(k, None)

    def _touched(self, start: int, end: int) -> None:
        """Bytes ``[start, end)`` written; growing past the old size opens a hole there."""
        lo = min(start, self.size)
        self.size = max(self.size, end)
        if end > lo:
            for k in range(lo // self.block, (end - 1) // self.block + 1):
                self._stale(k)

    def _drop_tail(self) -> None:
        self._tail, self.tail_block, self.tail_end = None, -1, -1

    def _feed(self, start: int, view: memoryview, grows: bool) -> None:
        """Hash the bytes ``view`` just written at ``start`` where they continue the tail,
        or start a new tail at their first block boundary when they extend the file out of
        order; blocks they complete get their digest (and are no longer stale)."""
        B, end = self.block, start + len(view)
        if self._tail is not None and start != self.tail_end:
            if start < self.tail_end and end > self.tail_block * B:
                self._drop_tail()  # bytes the tail has fed changed
            elif grows:
                self._drop_tail()  # out of order: the new bytes start a tail of their own
            else:
                return  # bytes elsewhere (metadata): the tail goes on
        if self._tail is None:
            if not grows:
                return
            first = -(-start // B) * B
            if first >= end:
                return
            self._tail, self.tail_block, self.tail_end = self._new(), first // B, first
        at = self.tail_end
        while at < end:
            k = at // B
            stop = min(end, (k + 1) * B)
            self._tail.update(view[at - start:stop - start])
            at = stop
            if stop == (k + 1) * B:  # the block is complete: its digest, a new tail
                self.digests[k] = self._tail.digest()
                self.stale.discard(k)
                self._tail = self._new()
                self.tail_block = k + 1
        self.tail_end = at

    def _hash(self, k: int) -> None:
        if k == self.tail_block and self._tail is not None and self.tail_end == self.size:
            self.digests[k] = self._tail.digest()  # the short last block, fed in full
        else:
            n = _read_into(self._fd(), self._scratch, k * self.block)
            self.digests[k] = self._new(memoryview(self._scratch)[:n]).digest()
            self.reread += 1
        self.stale.discard(k)

    def settle(self) -> None:
        """Hash the stale blocks the file has grown past; every :data:`SYNC_BYTES`, write them
        back and let the page cache drop them. Called between writes (the writer thread's idle
        moments)."""
        if self.discarded:
            return
        complete = self.size // self.block
        for k in sorted(k for k in self.stale if k < complete):
            self._hash(k)
        if self._unsynced >= SYNC_BYTES:
            _datasync(self._fd())
            _drop_cached(self._fd())
            self._unsynced = 0

    def finish(self) -> dict:
        """Hash what is stale and close: ``{"bytes", "xxh3_128_blocks", "block_bytes"}``."""
        if self.error is not None:
            raise self.error
        for k in sorted(self.stale):
            self._hash(k)
        n_blocks = -(-self.size // self.block)
        missing = [k for k in range(n_blocks) if k not in self.digests]
        assert not missing, f"blocks {missing[:5]} of {self.path} never hashed"
        record = {"bytes": self.size, RECORD_KEY: combine(
            [self.digests[k] for k in range(n_blocks)]), "block_bytes": self.block}
        self.close()
        return record

    def discard(self) -> None:
        """Drop whatever is written from now on (the file is being thrown away)."""
        self.discarded = True

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
