"""Re-exports of :mod:`neurondb.errors` (the one home of neurondb's errors)."""

from neurondb.errors import BadRequestError, NotFoundError, ServeError  # noqa: F401
