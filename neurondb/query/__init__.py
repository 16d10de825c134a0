"""Queries over a store: the DuckDB connection and the analyses of SPEC §2–§4."""
