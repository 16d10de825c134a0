"""``neurondb serve``: a local, read-only web app over a store.

Pages: ``/`` (the store), ``/runs/{run}``, ``/rankings/{name}``,
``/neurons/{stack}/{layer}/{neuron}``, ``/compare?rankings=A,B``, ``/sql`` (a console through
the store's sandboxed connection) and ``/api/sql?q=...`` (JSON). Modules:
:mod:`~neurondb.serve.app` (the factory), :mod:`~neurondb.serve.routes` (endpoints),
:mod:`~neurondb.serve.pages` (what each page shows), :mod:`~neurondb.serve.svg` (figures),
:mod:`~neurondb.serve.security` (headers, hosts), :mod:`~neurondb.serve.server` (uvicorn).
"""

from neurondb.serve.app import create_app

__all__ = ["create_app"]
