"""A run committed while the browser runs appears without a restart (the store is reopened
when its catalog changes), and a dropped one disappears."""

from __future__ import annotations

import shutil

from neurondb.store import catalog
from neurondb.testing_stores import write_text_run
from tests.serve.conftest import PLANTS, sentences
from tests.serve.helpers import client


def test_runs_committed_or_dropped_while_serving_show_up(tmp_path, bare_store):
    root = tmp_path / "store"
    shutil.copytree(bare_store, root)
    with client(root) as c:
        first = c.get("/")
        assert first.status_code == 200 and "late" not in first.text
        assert c.get("/runs/late").status_code == 404
        texts, labels, toks = sentences()
        write_text_run(root, "late", "test", texts, labels, ["neg", "pos"], toks, PLANTS)
        page = c.get("/")
        assert page.status_code == 200 and "late" in page.text
        assert c.get("/runs/late").status_code == 200
        got = c.get("/api/sql", params={"q": "SELECT count(DISTINCT run) FROM examples"})
        assert got.json()["rows"] == [[2]]
        catalog.forget_run(root, "late")  # dropped (e.g. re-extracted with --overwrite)
        shutil.rmtree(root / "runs" / "late")
        assert "late" not in c.get("/").text
        assert c.get("/api/sql", params={"q": "SELECT count(DISTINCT run) FROM examples"}
                     ).json()["rows"] == [[1]]
