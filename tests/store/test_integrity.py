"""Nothing is read that was not checked: the cases of the issue, one test each, plus the
manifest's own checksum, ``verify``'s exit codes and ``--no-verify``."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
from typer.testing import CliRunner

import neurondb
from neurondb.cli.app import app
from neurondb.errors import StoreError
from neurondb.query import read_result
from neurondb.store.manifest import Manifest
from neurondb.store.verify import verify_store
from tests.store.integrity_store import build_store, damage, fresh_copy, run_names

runner = CliRunner()
COUNT = "SELECT count(*) AS n FROM examples"


@pytest.fixture(scope="module")
def ref(tmp_path_factory, tiny_path, sentiment_dir):
    return build_store(tmp_path_factory.mktemp("integrity"), tiny_path("bert"), sentiment_dir)


@pytest.fixture
def store(ref, tmp_path):
    return fresh_copy(ref, tmp_path / "s")


def cli(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def refused_one_line(root, *words):
    """Opening ``root`` and the CLI query both refuse with one line naming ``words``."""
    with pytest.raises(StoreError) as e:
        neurondb.open(root)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)
    res = cli("query", root, COUNT)
    assert res.exit_code == 2 and res.output.startswith("error: ")
    assert len(res.output.strip().splitlines()) == 1
    return msg


def test_deleted_shard_directory_is_an_error_not_fewer_examples(store):
    v, t = run_names(store)
    shutil.rmtree(store / "runs" / v / "shards" / "c000001")
    msg = refused_one_line(store, v, "c000001", "3 of its 4 shards")
    assert "verify=False" in msg and "--no-verify" not in msg
    with pytest.raises(StoreError, match="c000001"):  # rank writes no other ranking
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            neurondb.query.rank(store, "predictivity", eval="validation", train="train",
                                name="r2")
    res = cli("rank", store, "--name", "r3")
    assert res.exit_code == 2 and "c000001" in res.output
    assert not (store / "results" / "rankings" / "r2.parquet").exists()
    assert not (store / "results" / "rankings" / "r3.parquet").exists()
    res = cli("verify", store)
    assert res.exit_code == 1 and "DAMAGED" in res.output and "c000001" in res.output
    # --no-verify reads the intact rest, knowingly: it says what it left out
    res = cli("query", store, COUNT, "--no-verify", "--format", "csv")
    assert res.exit_code == 0 and res.stdout.strip().splitlines()[1] == str(24 + 9)
    assert "left out" in res.stderr and "c000001" in res.stderr


def test_deleted_shard_json_is_an_error(store):
    v, _ = run_names(store)
    (store / "runs" / v / "shards" / "c000002" / "shard.json").unlink()
    refused_one_line(store, "c000002", "shard.json")
    rep = verify_store(store)
    assert not rep.ok and any("c000002/shard.json is missing" in p for p in rep.problems)


def test_a_deleted_run_is_caught_by_open_and_verify(store):
    v, _ = run_names(store)
    shutil.rmtree(store / "runs" / v)
    refused_one_line(store, v, f"catalog/runs/{v}.json")
    res = cli("verify", store)
    assert res.exit_code == 1 and "DAMAGED" in res.output and f"runs/{v} is missing" in res.output
    st = neurondb.open(store, verify=False)
    assert [i.split for i in st.runs()] == ["train"]
    assert any(v in line for line in st.left_out)
    st.close()


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_run_parquet_damage_is_refused_not_a_traceback(store, how):
    v, _ = run_names(store)
    damage(store / "runs" / v / "run.parquet", how)
    refused_one_line(store, "run.parquet", v)
    res = cli("verify", store)
    assert res.exit_code == 1 and "run.parquet" in res.output
    # --no-verify leaves the damaged run out and reads the other one
    st = neurondb.open(store, verify=False)
    assert [i.split for i in st.runs()] == ["train"]
    assert st.connection.arrow("SELECT count(*) AS n FROM runs").to_pylist() == [{"n": 1}]
    st.close()


def test_result_file_damage_refuses_that_result_alone(store):
    damage(store / "results" / "rankings" / "r.parquet", "flip")
    with pytest.raises(StoreError, match="r.parquet"):
        read_result(store, "rankings", "r")
    res = cli("verify", store)
    assert res.exit_code == 1 and "rankings/r.parquet" in res.output
    st = neurondb.open(store)  # the store still opens after the failed verify
    assert st.connection.arrow(COUNT).to_pylist() == [{"n": 36}]
    assert len(read_result(st, "masks", "m")[0]) > 0
    with pytest.raises(StoreError):
        read_result(st, "rankings", "r")
    st.close()


@pytest.mark.parametrize("rel", ["manifest.json", "runs/{v}/run.json",
                                 "runs/{v}/shards/c000000/shard.json", "catalog/runs/{v}.json"])
def test_non_utf8_json_names_the_file_and_verify_reports_it(store, rel):
    v, _ = run_names(store)
    f = store / rel.format(v=v)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] = 0x84  # not UTF-8 anywhere
    f.write_bytes(bytes(data))
    msg = refused_one_line(store, str(f))
    assert "utf-8 codec" not in msg
    res = cli("verify", store)
    assert res.exit_code == 1, res.output  # a finding, not exit 2
    assert str(f) in res.output and "DAMAGED" in res.output


def test_manifest_checksum_catches_a_changed_value(store):
    d = json.loads((store / "manifest.json").read_text())
    assert d["checksum"] and d["catalog"] == 1
    d["model"]["shape"]["d_model"] += 1  # still valid JSON, wrong content
    (store / "manifest.json").write_text(json.dumps(d, indent=2))
    refused_one_line(store, "manifest.json", "checksum")
    assert cli("verify", store).exit_code == 1


def test_older_manifest_without_checksum_is_accepted(tmp_path):
    from neurondb.testing_stores import make_store

    root = make_store(tmp_path / "s")
    d = json.loads((root / "manifest.json").read_text())
    for k in ("checksum", "catalog"):
        d.pop(k)
    (root / "manifest.json").write_text(json.dumps(d))
    m = Manifest.read(root)
    assert m.catalog == 0 and m.model.name == "synthetic"
    neurondb.open(root).close()
    assert verify_store(root).ok


def test_complete_run_missing_from_the_catalog_is_refused(store):
    v, _ = run_names(store)
    (store / "catalog" / "runs" / f"{v}.json").unlink()
    refused_one_line(store, v, "not in the catalog")
    rep = verify_store(store)
    assert not rep.ok and rep.damaged_runs == [v]


def test_verify_exit_codes(store, tmp_path):
    res = cli("verify", store)
    assert res.exit_code == 0 and res.output.strip().endswith("0 problem(s)")
    assert cli("verify", tmp_path / "nothing").exit_code == 2  # not a store: a usage error
    (store / "manifest.json").unlink()  # a store without its manifest: damage
    res = cli("verify", store)
    assert res.exit_code == 1 and "manifest.json is missing" in res.output


def test_verify_never_raises_on_nonsense_files(store):
    v, t = run_names(store)
    (store / "runs" / v / "shards" / "c000000" / "shard.json").write_text("[1, 2]")
    (store / "runs" / t / "shards" / "c000000" / "shard.json").write_text('{"chunk": "x", "y": 1}')
    (store / "catalog" / "runs" / f"{t}.json").write_text('{"n_chunks": "many", "files": 3}')
    rep = verify_store(store)
    assert not rep.ok
    joined = " ".join(rep.problems)
    assert f"{v}/shards/c000000/shard.json" in joined and f"{t}/shards/c000000" in joined
    with pytest.raises(StoreError):
        neurondb.open(store)


def test_verify_repair_removes_dead_leftovers(store):
    v, _ = run_names(store)
    dead = store / "runs" / v / ".run.json.tmp-999999999"
    dead.write_text("{}")
    res = cli("verify", store, "--repair")
    assert res.exit_code == 0, res.output
    assert "repair:" in res.output and ".run.json.tmp-999999999" in res.output
    assert not dead.exists()


def test_open_refuses_after_a_failed_verify_and_no_verify_leaves_the_shard_out(store):
    """A flipped byte inside a large file is not seen on open (sizes only); verify sees it,
    and from then on the store is refused, and --no-verify leaves that shard out."""
    v, _ = run_names(store)
    damage(store / "runs" / v / "shards" / "c000003" / "activations.h5", "flip")
    assert not verify_store(store).ok
    refused_one_line(store, "failed verification", "activations.h5")
    st = neurondb.open(store, verify=False)
    assert len(st.shards(v)) == 3 and st.examples(run=v).num_rows == 9
    assert any(line.startswith(f"shard c000003 of run {v}: damaged") for line in st.left_out)
    st.close()
