"""The damage matrix: every kind of file in a store x {truncate, flip a byte, delete}.

For each case the store is damaged, then:

1. *before any verify*: every answer is either refused with a one-line neurondb error
   (StoreError/QueryError, never another exception type) or is the same answer as the intact
   store's; where noted (:data:`ONLY_VERIFY_SEES`), a flipped byte inside a large data file is
   not read on open (sizes only, by design: no hashing of big files on open), so the answer may
   differ until ``verify`` runs;
2. ``verify_store`` reports a problem naming the damaged file (it never raises);
3. *after verify*: the store is refused on open (its ``verify.json`` records the damage), or,
   for a result file, the store opens and answers as before while that result alone is
   refused (``read_result`` and its SQL view).
"""

from __future__ import annotations

import numpy as np
import pytest

import neurondb
from neurondb.errors import StoreError
from neurondb.query import read_result
from neurondb.store.maskfile import read_mask, write_mask
from neurondb.store.verify import verify_store
from tests.store.integrity_store import build_store, damage, fresh_copy, run_names

HOWS = ("truncate", "flip", "delete")

#: kind -> path inside the store ({v}: the validation tokens run, {t}: the train stats run)
KINDS = {
    "manifest": "manifest.json",
    "run.json": "runs/{v}/run.json",
    "run.json(stats run)": "runs/{t}/run.json",
    "run.parquet": "runs/{v}/run.parquet",
    "shard.json": "runs/{v}/shards/c000001/shard.json",
    "examples.parquet": "runs/{v}/shards/c000001/examples.parquet",
    "tokens.parquet": "runs/{v}/shards/c000001/tokens.parquet",
    "rows.parquet": "runs/{v}/shards/c000001/rows.parquet",
    "activations.h5": "runs/{v}/shards/c000001/activations.h5",
    "stats.h5": "runs/{t}/shards/c000001/stats.h5",
    "examples.parquet(stats run)": "runs/{t}/shards/c000002/examples.parquet",
    "catalog run entry": "catalog/runs/{v}.json",
    "ranking result": "results/rankings/r.parquet",
    "mask result": "results/masks/m.parquet",
    "catalog result entry": "catalog/results/rankings/r.json",
}
RESULT_FILES = {"ranking result": ("rankings", "r"), "mask result": ("masks", "m")}

#: A flipped byte in the middle of a shard's data file keeps its size; opening checks sizes
#: only (hashing every large file on each open is what the 20 ms open budget forbids), so
#: before ``verify`` a query may fail (refused, one line) or even read the flipped value.
#: ``verify`` hashes every file, finds it, records it, and the store is refused from then on.
ONLY_VERIFY_SEES = {(k, "flip") for k in ("examples.parquet", "tokens.parquet", "rows.parquet",
                                          "activations.h5", "stats.h5",
                                          "examples.parquet(stats run)")}

QUERIES = ("SELECT count(*), sum(label), sum(n_tokens) FROM examples",
           "SELECT count(*), sum(row), sum(position) FROM rows",
           "SELECT count(*), sum(token_id) FROM tokens",
           "SELECT run, n_examples, accuracy, n_chunks FROM runs ORDER BY run",
           "SELECT count(*), sum(value) FROM activations(layer := 0)")


@pytest.fixture(scope="module")
def ref(tmp_path_factory, tiny_path, sentiment_dir):
    return build_store(tmp_path_factory.mktemp("matrix"), tiny_path("bert"), sentiment_dir)


def answers(root) -> dict:
    """Every kind of answer the store gives (SQL views, tensors, stats, results)."""
    st = neurondb.open(root)
    try:
        v, t = st.run(split="validation").run, st.run(split="train").run
        out = {q: st.connection.arrow(q).to_pylist() for q in QUERIES}
        out["activations"] = np.asarray(st.activations(1, run=v), np.float64).tolist()
        s = st.stats(run=t)
        out["stats"] = {str(k): np.asarray(a, np.float64).tolist() for k, a in s.sum.items()}
        out["examples"] = st.examples(run=t).to_pylist()
    finally:
        st.close()
    return out


def result_answer(root, table: str, name: str):
    df, meta = read_result(root, table, name)
    return df.to_json(), meta


def outcome(fn):
    """``("refused", message)`` for a neurondb error, ``("answer", value)`` otherwise; any
    other exception fails the test (a traceback is never an answer to damage)."""
    try:
        return "answer", fn()
    except StoreError as e:  # QueryError, StoreIOError, ProvenanceError are StoreErrors
        msg = str(e)
        assert "\n" not in msg, f"not one line: {msg!r}"
        return "refused", msg


@pytest.fixture(scope="module")
def reference(ref):
    return (answers(ref), {k: result_answer(ref, *tn) for k, tn in RESULT_FILES.items()},
            run_names(ref))


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_damage_is_found_and_never_changes_an_answer(kind, how, ref, reference, tmp_path):
    want, want_results, (v, t) = reference
    root = fresh_copy(ref, tmp_path / "s")
    rel = KINDS[kind].format(v=v, t=t)
    damage(root / rel, how)

    # 1. before verify: refused, or the same answer (unless only verify can see it)
    got = outcome(lambda: answers(root))
    if got[0] == "answer" and (kind, how) not in ONLY_VERIFY_SEES:
        assert got[1] == want, f"{kind} {how}: a different answer without an error"
    for k, tn in RESULT_FILES.items():
        r = outcome(lambda tn=tn: result_answer(root, *tn))
        if r[0] == "answer":
            assert r[1] == want_results[k], f"{kind} {how}: result {k} changed without an error"
        elif k == kind:
            assert f"{tn[1]}.parquet" in r[1], r[1]  # the damaged file is named

    # 2. verify finds it, naming the file, and does not raise
    rep = verify_store(root)
    assert not rep.ok, f"{kind} {how}: verify says OK"
    assert any(rel in p for p in rep.problems), (rel, rep.problems)

    # 3. after verify
    after = outcome(lambda: answers(root))
    if kind in RESULT_FILES:
        # the damaged result alone is refused; the store answers as before
        assert after == ("answer", want)
        table, name = RESULT_FILES[kind]
        assert outcome(lambda: result_answer(root, table, name))[0] == "refused"
        other = next(k for k in RESULT_FILES if k != kind)
        assert outcome(lambda: result_answer(root, *RESULT_FILES[other])) == \
            ("answer", want_results[other])
        st = neurondb.open(root)
        view = outcome(lambda: st.connection.arrow(f'SELECT count(*) FROM "{table}"'))
        st.close()
        assert view[0] == "refused", f"the {table} view still reads a damaged result"
    elif kind == "catalog result entry":
        # the result's data are intact: its record is damaged or gone. Refusing the store, or
        # that result, or reading the very same result (an entry deleted: no record to check
        # against) are all allowed; a different answer is not.
        if after[0] == "answer":
            assert after[1] == want
        r = outcome(lambda: result_answer(root, "rankings", "r"))
        assert r[0] == "refused" or r[1] == want_results["ranking result"]
    else:
        assert after[0] == "refused", f"{kind} {how}: the store opens after a failed verify"


@pytest.mark.parametrize("how", HOWS)
def test_portable_mask_file_damage_is_refused(how, ref, tmp_path):
    src = ref.parent / "portable_mask.parquet"
    table, meta = read_mask(src)
    f = tmp_path / "mask.parquet"
    f.write_bytes(src.read_bytes())
    damage(f, how)
    with pytest.raises(StoreError) as e:
        read_mask(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_every_single_byte_flip_of_a_mask_file_is_refused_or_harmless(tmp_path):
    """No flipped byte anywhere in a mask file changes the neurons or the provenance read."""
    src = write_mask(tmp_path / "m.parquet", ["encoder", "encoder", "decoder"], [0, 1, 0],
                     [5, 7, 3], {"ranking": "r", "fraction": 0.1, "shape": {"x": 1}})
    want = read_mask(src)
    want = (want[0].to_pylist(), want[1])
    data = src.read_bytes()
    f = tmp_path / "x.parquet"
    refused = 0
    for i in range(len(data)):
        b = bytearray(data)
        b[i] ^= 0xFF if i % 2 else 0x01
        f.write_bytes(bytes(b))
        try:
            t, meta = read_mask(f)
        except StoreError:
            refused += 1
            continue
        assert (t.to_pylist(), meta) == want, f"byte {i}: a different mask read without error"
    assert refused > len(data) // 2
