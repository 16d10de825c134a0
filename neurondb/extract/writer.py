"""A writer thread: host copies, encoding and file writes overlap the next forward pass.

``submit(fn, *args)`` queues work (bounded, so memory stays bounded by a few batches);
errors raised in the thread are re-raised by the next ``submit``/``flush``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np
import torch

from neurondb.store.codec import encode

_STOP = object()


class BackgroundWriter:
    def __init__(self, max_pending: int = 4, threaded: bool = True):
        self.threaded = threaded
        self._q: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="neurondb-writer", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is _STOP:
                    return
                if self._error is None:
                    fn, args = item
                    fn(*args)
            except BaseException as e:  # surfaced to the main thread
                self._error = e
            finally:
                self._q.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, fn: Callable, *args) -> None:
        self._raise()
        if not self.threaded:
            fn(*args)
            return
        self._q.put((fn, args))

    def flush(self) -> None:
        if self.threaded:
            self._q.join()
        self._raise()

    def drain(self) -> None:
        """Wait for queued work, dropping any error (used before aborting a shard)."""
        if self.threaded:
            self._q.join()
        self._error = None

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join()
            self._thread = None


class HostCopy:
    """A device tensor on its way to the host in the storage dtype.

    On CUDA the cast happens on the device and the copy goes to pinned memory without
    blocking; :meth:`numpy` (called in the writer thread) waits for that copy only.
    """

    def __init__(self, x: torch.Tensor, dtype: str):
        self.dtype = dtype
        if x.is_cuda:
            tdt = torch.int16 if dtype == "bfloat16" else getattr(torch, dtype)
            y = x.detach().to(getattr(torch, dtype))
            if dtype == "bfloat16":
                y = y.view(torch.int16)
            self.host = torch.empty(y.shape, dtype=tdt, pin_memory=True)
            self.host.copy_(y, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
            self.array = None
        else:
            self.host = None
            self.event = None
            self.array = encode(x, dtype)

    def numpy(self) -> np.ndarray:
        if self.array is None:
            self.event.synchronize()
            a = self.host.numpy()
            self.array = a.view(np.uint16) if self.dtype == "bfloat16" else a
        return self.array
