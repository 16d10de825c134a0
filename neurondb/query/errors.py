"""Errors of the query layer: one line that names the problem and the fix."""

from __future__ import annotations

from neurondb.store.errors import StoreError


class QueryError(StoreError):
    """An analysis was asked something the store cannot answer as asked."""


def one_line(msg: str) -> str:
    """Collapse whitespace so a message built from several parts stays on one line."""
    return " ".join(msg.split())
