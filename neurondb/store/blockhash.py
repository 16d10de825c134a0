"""The checksum of a file written in place: the sha256 of the sha256 digests of its blocks.

A whole-file sha256 can be computed only once a file is final, so an extraction's last shard
used to hash its tensor file (hundreds of MB) after the model had stopped running, with nothing
to overlap it. A tensor file is instead written through :class:`WatchedFile`, which sees every
byte HDF5 writes: a block of :data:`BLOCK_BYTES` is hashed (in the writer thread, while the
model runs) once the file has grown past it, and hashed again only if HDF5 writes into it later
(its metadata, at close). The record a commit keeps is
``{"bytes": n, "sha256_blocks": hex, "block_bytes": BLOCK_BYTES}``, and
:func:`block_sha256_file` computes the same value from the file alone (``neurondb verify``).

    digest = sha256(sha256(block_0) || sha256(block_1) || ...)   (32-byte digests; the last
             block may be short; an empty file has no blocks)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

BLOCK_BYTES = 256 << 10
SYNC_BYTES = 32 << 20  # written bytes between two fdatasync calls (the writeback overlaps too)


def _datasync(fd: int) -> None:
    """``fdatasync`` (``fsync`` where the OS has none, as macOS)."""
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def _read_into(fd: int, buf: bytearray, offset: int) -> int:
    """Read up to ``len(buf)`` bytes at ``offset`` into ``buf`` (``preadv`` where the OS has
    it); returns the count."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buf], offset)
    data = os.pread(fd, len(buf), offset)
    buf[:len(data)] = data
    return len(data)


def combine(digests: list[bytes]) -> str:
    """The file's checksum (hex) from its blocks' sha256 digests, in file order."""
    return hashlib.sha256(b"".join(digests)).hexdigest()


def block_sha256_file(path: str | Path, block_bytes: int = BLOCK_BYTES) -> str:
    """The block checksum of a file on disk (see the module docstring)."""
    digests = []
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(block_bytes), b""):
            digests.append(hashlib.sha256(block).digest())
    return combine(digests)


class WatchedFile:
    """A binary file for h5py's ``fileobj`` driver that keeps its block checksum current.

    Every write marks the blocks it touches (and any hole it opens) stale; :meth:`settle`
    hashes the stale blocks the file has grown past, reading them back from the page cache,
    and every :data:`SYNC_BYTES` starts their writeback (``fdatasync``) so that the commit's
    fsync has little left to do. :meth:`finish` hashes what is still stale and returns the
    record. The first operating-system error is kept in :attr:`error` (see :meth:`_failed`);
    after it, or after :meth:`discard`, writes go nowhere.
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
        self._touched(start, start + n)
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

    def _hash(self, k: int) -> None:
        n = _read_into(self._fd(), self._scratch, k * self.block)
        self.digests[k] = hashlib.sha256(memoryview(self._scratch)[:n]).digest()
        self.stale.discard(k)

    def settle(self) -> None:
        """Hash the stale blocks the file has grown past; start writeback every
        :data:`SYNC_BYTES`. Called between writes (the writer thread's idle moments)."""
        if self.discarded:
            return
        complete = self.size // self.block
        for k in sorted(k for k in self.stale if k < complete):
            self._hash(k)
        if self._unsynced >= SYNC_BYTES:
            _datasync(self._fd())
            self._unsynced = 0

    def finish(self) -> dict:
        """Hash what is stale and close: ``{"bytes", "sha256_blocks", "block_bytes"}``."""
        if self.error is not None:
            raise self.error
        for k in sorted(self.stale):
            self._hash(k)
        n_blocks = -(-self.size // self.block)
        missing = [k for k in range(n_blocks) if k not in self.digests]
        assert not missing, f"blocks {missing[:5]} of {self.path} never hashed"
        record = {"bytes": self.size, "sha256_blocks": combine(
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
