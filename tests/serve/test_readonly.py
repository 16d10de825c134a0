"""The app only reads: no method but GET, hostile requests change no file, other host names
are refused, and the command binds to loopback unless told otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from neurondb.cli.app import app as cli
from neurondb.errors import UsageError
from neurondb.serve.security import allowed_hosts, is_loopback
from neurondb.serve.server import check_host

from .helpers import client, snapshot

HOSTILE = [
    ("POST", "/sql", {"q": "COPY runs TO '/tmp/neurondb-x.csv'"}),
    ("PUT", "/runs/ev", None), ("DELETE", "/rankings/skill", None),
    ("PATCH", "/neurons/encoder/0/0", None), ("POST", "/api/sql", {"q": "SELECT 1"}),
    ("GET", "/static/../manifest.json", None), ("GET", "/static/%2e%2e/manifest.json", None),
    ("GET", "/static/..%2f..%2fmanifest.json", None), ("GET", "/runs/..%2F..%2Fmanifest.json", None),
    ("GET", "/rankings/..%2Fmasks%2Ftop25", None),
    ("GET", "/api/sql?q=SELECT%20*%20FROM%20read_text('manifest.json')", None),
    ("GET", "/sql?q=DROP%20VIEW%20examples", None),
    ("GET", "/neurons/encoder/0/0?run=../../etc", None),
]


def test_hostile_requests_change_no_file(full_store):
    before = snapshot(full_store.root)
    with client(full_store.root) as http:
        for method, url, data in HOSTILE:
            r = http.request(method, url, data=data)
            assert r.status_code in (400, 404, 405), (method, url, r.status_code)
            assert "Traceback" not in r.text
            if method != "GET":
                assert r.status_code == 405
        # every page, read once more, after all of it
        for url in ("/", "/runs/ev", "/rankings/skill", "/neurons/encoder/1/5", "/sql"):
            assert http.get(url).status_code == 200
    assert snapshot(full_store.root) == before


def test_other_host_names_are_refused(full_store):
    with client(full_store.root) as http:
        assert http.get("/", headers={"host": "evil.example"}).status_code == 400
        assert http.get("/", headers={"host": "localhost:8000"}).status_code == 200


def test_host_checks():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.0.0.2") and not is_loopback("0.0.0.0")
    assert check_host("127.0.0.1", False) is None
    with pytest.raises(UsageError, match="host='0.0.0.0' .*allow_remote=True"):
        check_host("0.0.0.0", False)
    assert "warning" in check_host("0.0.0.0", True)
    assert allowed_hosts("0.0.0.0") == ["*"]
    assert "testserver" not in allowed_hosts("127.0.0.1")


def test_serve_command_binds_loopback_and_warns_for_another_host(full_store, monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    runner = CliRunner()
    r = runner.invoke(cli, ["serve", str(full_store.root)])
    assert r.exit_code == 0, r.output
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8000
    assert "http://127.0.0.1:8000/" in r.output
    r = runner.invoke(cli, ["serve", str(full_store.root), "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "--allow-remote" in r.output and len(calls) == 1
    r = runner.invoke(cli, ["serve", str(full_store.root), "--host", "0.0.0.0",
                            "--allow-remote", "--port", "8123"])
    assert r.exit_code == 0 and "warning: serving on 0.0.0.0" in r.output
    assert calls[-1] == {"host": "0.0.0.0", "port": 8123, "log_level": "warning"}
    r = runner.invoke(cli, ["serve", str(full_store.root / "missing")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_import_neurondb_stays_light(full_store):
    """``import neurondb`` does not load the app; the app and its pages never load torch."""
    code = ("import sys, neurondb\n"
            "assert 'neurondb.serve' not in sys.modules and 'starlette' not in sys.modules\n"
            "import neurondb.cli.serve_cmd\n"
            "from tests.serve.helpers import client\n"
            "with client(sys.argv[1]) as c:\n"
            "    for u in ('/', '/runs/ev', '/rankings/skill', '/neurons/encoder/1/5',\n"
            "              '/compare?rankings=skill,random', '/sql?q=SELECT+1'):\n"
            "        assert c.get(u).status_code == 200, u\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(full_store.root)],
                         capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out
