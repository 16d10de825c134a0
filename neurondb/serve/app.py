"""The app factory: ``create_app(store)`` is an ASGI app over an open store (read-only)."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request

from neurondb.errors import NeurondbError, ServeError
from neurondb.serve.context import ServeContext
from neurondb.serve.rendering import environment
from neurondb.serve.routes import Pages
from neurondb.serve.security import SecurityHeaders, allowed_hosts
from neurondb.store.reader import Store

log = logging.getLogger("neurondb.serve")


def create_app(store: Store, host: str = "127.0.0.1") -> SecurityHeaders:
    """The browser over ``store`` (kept open; the caller closes it), answering requests for
    the loopback host names (and ``host``). Every response carries the security headers of
    :mod:`neurondb.serve.security`; errors are pages (404, 400, 405), never tracebacks."""
    ctx = ServeContext(store)
    pages = Pages(ctx, environment())

    async def serve_error(request: Request, exc: Exception):
        return pages.error(getattr(exc, "status", 400), str(exc))

    async def store_error(request: Request, exc: Exception):
        return pages.error(400, str(exc))

    async def http_error(request: Request, exc: Exception):
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "") or ""
        if status == 404:
            detail = f"no page at {request.url.path}"
        return pages.error(status, detail)

    async def internal_error(request: Request, exc: Exception):
        log.error("error on %s", request.url.path, exc_info=exc)
        return pages.error(500, f"internal error ({type(exc).__name__}); the server's log "
                                "has the details")

    app = Starlette(
        routes=pages.routes(),
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host))],
        exception_handlers={ServeError: serve_error, NeurondbError: store_error,
                            HTTPException: http_error, Exception: internal_error})
    app.state.context = ctx
    wrapped = SecurityHeaders(app)
    wrapped.context = ctx  # type: ignore[attr-defined]
    return wrapped
