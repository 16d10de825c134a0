"""One module per page: each gathers what its template shows (no HTML here)."""
