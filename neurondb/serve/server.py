"""Running the app with uvicorn: loopback by default; another host only when asked for
explicitly, with a warning."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from neurondb.errors import UsageError, arg, given, switch
from neurondb.serve.security import is_loopback


def check_host(host: str, allow_remote: bool) -> str | None:
    """None for a loopback host; the warning to print for another host when
    ``allow_remote``; a :class:`UsageError` otherwise."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise UsageError(f"{given('host', host)} would let other machines read the store; pass "
                         f"{switch('allow_remote')} as well if that is what you want")
    return (f"warning: serving on {host}: anyone who can reach this machine on that address "
            "can read the whole store (there is no authentication)")


def serve(paths: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000,
          allow_remote: bool = False, verify: bool = True, say=print) -> None:
    """Open the store(s) and serve them until interrupted."""
    import uvicorn

    from neurondb.serve.app import create_app
    from neurondb.store.reader import open_store

    if not 0 < port < 65536:
        raise UsageError(f"{arg('port')} must be between 1 and 65535, not {port}")
    warning = check_host(host, allow_remote)
    store = open_store(*paths, verify=verify)
    try:
        app = create_app(store, host=host)
        if warning:
            print(warning, file=sys.stderr)
        shown = f"[{host}]" if ":" in host else host
        say(f"neurondb: serving {', '.join(str(p) for p in store.roots)} at "
            f"http://{shown}:{port}/ (Ctrl-C stops)")
        uvicorn.run(app, host=host, port=port, log_level="warning")
        app.context.close()  # a store reopened because runs were committed meanwhile
    finally:
        store.close()
