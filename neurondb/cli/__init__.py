"""The typer command-line app; thin over the Python API."""
