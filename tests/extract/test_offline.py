"""Offline-aware loading: a hub name (dataset or model) when the hub cannot be reached fails
in under 2 s with one line naming the local forms that work. Nothing here touches the
network: the hub is declared offline (HF_HUB_OFFLINE=1) or the probe is replaced."""

from __future__ import annotations

import socket
import sys
import time

import pytest
from typer.testing import CliRunner

from neurondb import hub
from neurondb.cli.app import app
from neurondb.errors import ExtractError
from neurondb.runtime.data import load_data
from neurondb.runtime.model import load_config

runner = CliRunner()
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@pytest.fixture
def fresh_hub(monkeypatch):
    """A fresh offline decision; the environment and the hub libraries' offline flags are
    restored afterwards (the code under test switches them on)."""
    import datasets.config
    import huggingface_hub.constants

    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE",
                        huggingface_hub.constants.HF_HUB_OFFLINE)
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setattr(datasets.config, flag, getattr(datasets.config, flag))
    hub.reset()
    yield monkeypatch
    hub.reset()


def _unreachable(monkeypatch) -> list:
    calls: list = []

    def probe(host: str, port: int, timeout: float = hub.PROBE_TIMEOUT_S) -> str:
        calls.append((host, port))
        return f"{host}:{port} cannot be reached (test)"

    monkeypatch.setattr(hub, "probe", probe)
    return calls


def _fails_fast(call) -> str:
    t0 = time.perf_counter()
    with pytest.raises(ExtractError) as e:
        call()
    assert time.perf_counter() - t0 < 2.0
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_hub_dataset_with_hf_hub_offline_fails_fast_naming_local_forms(fresh_hub, tmp_path):
    fresh_hub.setenv("HF_HUB_OFFLINE", "1")
    fresh_hub.chdir(tmp_path)
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    (tmp_path / "data" / "sst2" / "validation.parquet").write_bytes(b"")
    msg = _fails_fast(lambda: load_data("sst2", "validation"))
    assert msg.startswith("cannot load dataset 'sst2' (hub glue/sst2): the hub is offline "
                          "(HF_HUB_OFFLINE=1 is set)"), msg
    assert "<split>.parquet" in msg and "a single data file" in msg and "movie_reviews" in msg
    assert "(here: data='data/sst2')" in msg  # a matching local directory is pointed to


def test_unreachable_hub_is_detected_once_and_fails_fast(fresh_hub):
    calls = _unreachable(fresh_hub)
    msg = _fails_fast(lambda: load_data("some-user/no-such-dataset", "train"))
    assert "huggingface.co:443 cannot be reached (test)" in msg and "<split>.parquet" in msg
    _fails_fast(lambda: load_config("some-user/no-such-model"))
    assert calls == [("huggingface.co", 443)]  # one probe per process, no retry


def test_hub_model_offline_names_local_model_forms(fresh_hub):
    fresh_hub.setenv("HF_HUB_OFFLINE", "1")
    msg = _fails_fast(lambda: load_config("some-user/no-such-model"))
    assert msg.startswith("cannot load model 'some-user/no-such-model': the hub is offline"), msg
    assert "config.json" in msg and ".gguf" in msg and "minilm, smollm2" in msg


def test_local_model_path_never_probes(fresh_hub, tiny_path):
    calls = _unreachable(fresh_hub)
    assert load_config(str(tiny_path("bert"))).model_type == "bert"
    assert calls == []


def test_cli_extract_hub_name_offline_is_one_line(fresh_hub, tiny_path, tmp_path):
    fresh_hub.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    res = runner.invoke(app, ["extract", str(tiny_path("bert")), "--data", "sst2",
                              "--out", str(tmp_path / "s")])
    assert time.perf_counter() - t0 < 2.0
    assert res.exit_code == 2, res.output
    assert res.output.strip().count("\n") == 0, res.output
    assert res.output.startswith("error: cannot load dataset 'sst2'") and "<split>.parquet" in res.output
    assert not (tmp_path / "s").exists()


def test_probe_reports_a_refused_port_and_accepts_an_open_one():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        assert hub.probe("127.0.0.1", srv.getsockname()[1]) is None
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    why = hub.probe("127.0.0.1", port, timeout=0.5)
    assert why is not None and why.startswith(f"127.0.0.1:{port} cannot be reached")


def test_offline_mode_is_switched_on_for_hub_libraries(fresh_hub):
    _unreachable(fresh_hub)
    assert hub.offline_reason() is not None
    assert sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE is True
    assert sys.modules["datasets.config"].HF_HUB_OFFLINE is True


def test_transfer_target_hub_name_offline_fails_fast(fresh_hub):
    from neurondb.tune.transfer import _target

    fresh_hub.setenv("HF_HUB_OFFLINE", "1")
    msg = _fails_fast(lambda: _target("sst2", "validation", [], None, "label", None))
    assert msg.startswith("cannot load dataset 'sst2'") and "<split>.parquet" in msg
