"""Offline awareness for Hugging Face hub names: the one home of "can the hub be reached?".

Loading a hub dataset or model when the hub cannot be reached makes ``datasets`` and
``huggingface_hub`` retry for half a minute before failing. :func:`offline_reason` decides
once per process whether the hub is out of reach — ``HF_HUB_OFFLINE`` /
``HF_DATASETS_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set, or a single TCP connect to the hub
host (``huggingface.co:443`` or ``HF_ENDPOINT``'s host) failing within
:data:`PROBE_TIMEOUT_S` — and, when it is, switches the hub libraries to offline mode so that a
cached name still loads and an uncached one fails at once. Callers then turn that failure into
one line naming the local forms that work (see :func:`offline_error`).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from urllib.parse import urlparse

from neurondb.errors import ExtractError

#: Seconds the connectivity probe waits for a TCP connect to the hub host (no retry).
PROBE_TIMEOUT_S = 1.0
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}

_decided = False
_reason: str | None = None


def hub_host() -> tuple[str, int]:
    """(host, port) of the hub: ``HF_ENDPOINT``'s when set, else ``huggingface.co:443``."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def probe(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """One TCP connect to ``host:port`` within ``timeout`` seconds; None when it connects,
    else the reason (e.g. ``"huggingface.co:443 cannot be reached (Network is unreachable)"``)."""
    out: list[str | None] = []

    def connect() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            with socket.create_connection((host, port), timeout=timeout):
                out.append(None)
        except OSError as e:
            why = e.strerror or type(e).__name__
            if isinstance(e, (socket.timeout, TimeoutError)):
                why = f"no answer in {timeout:g} s"
            out.append(f"{host}:{port} cannot be reached ({why})")

    t = threading.Thread(target=connect, name="neurondb-hub-probe", daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else f"{host}:{port} cannot be reached (no answer in {timeout:g} s)"


def _set_offline_mode() -> None:
    """Switch the hub libraries to offline mode for the rest of the process (cache only,
    no retries): the environment for libraries imported later, the module flags for those
    already imported."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    hh = sys.modules.get("huggingface_hub.constants")
    if hh is not None:
        hh.HF_HUB_OFFLINE = True
    dc = sys.modules.get("datasets.config")
    if dc is not None:
        dc.HF_HUB_OFFLINE = True
        dc.HF_DATASETS_OFFLINE = True


def offline_reason() -> str | None:
    """Why the hub cannot be reached (decided once per process), or None when it can. When
    it cannot, the hub libraries are switched to offline mode (see :func:`_set_offline_mode`)."""
    global _decided, _reason
    if not _decided:
        set_vars = [v for v in OFFLINE_VARS if os.environ.get(v, "").upper() in _TRUE]
        _reason = f"{set_vars[0]}=1 is set" if set_vars else probe(*hub_host())
        _decided = True
        if _reason is not None:
            _set_offline_mode()
    return _reason


def reset() -> None:
    """Forget the decision (tests; or after the network came back)."""
    global _decided, _reason
    _decided, _reason = False, None


def offline_error(what: str, reason: str, cause: BaseException | None, forms: str) -> ExtractError:
    """One line: ``what`` could not be loaded because the hub is offline (``reason``) and it is
    not in the local cache; ``forms`` names the local forms that work."""
    detail = ""
    if cause is not None and str(cause):
        detail = f" ({str(cause).splitlines()[0][:160]})"
    return ExtractError(f"cannot load {what}: the hub is offline ({reason}) and it is not in "
                        f"the local cache{detail}; {forms}")
