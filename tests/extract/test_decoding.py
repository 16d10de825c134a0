"""Input decoding: text files are decoded strictly (an error names the file and the byte
offset; --encoding reads other encodings), missing texts are refused with their row or
dropped with a count, and a pickled prompt file is one line."""

from __future__ import annotations

import collections
import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import neurondb
from neurondb.cli.app import app
from neurondb.errors import ExtractError, InputDecodeError
from neurondb.extract.run import ExtractConfig
from neurondb.runtime.data import load_data
from neurondb.runtime.prompt import load_prompt

runner = CliRunner()
LATIN = "text,label\nthe movie was great,1\ncaf\xe9 and cr\xe8me,0\na boring film,0\n".encode("latin-1")
WIRED = "encoding" in ExtractConfig.__dataclass_fields__
NOT_WIRED = ("extract/run.py does not pass --encoding/--drop-missing-text to load_data yet "
             "(see the report of part D: the lead wires it)")


def test_non_utf8_csv_names_file_and_byte_offset(tmp_path):
    f = tmp_path / "latin.csv"
    f.write_bytes(LATIN)
    with pytest.raises(InputDecodeError) as e:
        load_data(str(f))
    msg = str(e.value)
    offset = LATIN.index(b"\xe9")
    assert "\n" not in msg
    assert str(f) in msg and f"byte offset {offset}" in msg and "0xe9" in msg
    assert "encoding='latin-1'" in msg


def test_encoding_option_reads_latin1(tmp_path):
    f = tmp_path / "latin.csv"
    f.write_bytes(LATIN)
    d = load_data(str(f), encoding="latin-1")
    assert [t[0] for t in d.texts] == ["the movie was great", "café and crème", "a boring film"]
    assert not any("b'" in t[0] for t in d.texts)
    assert d.fingerprint != load_data(str(_utf8_copy(tmp_path)), encoding="utf-8").fingerprint
    with pytest.raises(InputDecodeError, match="unknown encoding 'klingon'"):
        load_data(str(f), encoding="klingon")


def _utf8_copy(tmp_path):
    g = tmp_path / "utf8.csv"
    g.write_bytes(LATIN.decode("latin-1").encode("utf-8"))
    return g


def test_utf8_bom_and_jsonl(tmp_path):
    f = tmp_path / "bom.csv"
    f.write_bytes(b"\xef\xbb\xbftext,label\nna\xc3\xafve,1\n")
    d = load_data(str(f))
    assert d.texts == [["naïve"]] and d.text_fields == ["text"]
    j = tmp_path / "x.jsonl"
    j.write_bytes(b'{"text": "ok", "label": 1}\n{"text": "bad \xff byte", "label": 0}\n')
    with pytest.raises(InputDecodeError, match=r"x.jsonl is not valid utf-8: byte 0xff at byte offset 41"):
        load_data(str(j))


def test_binary_parquet_text_is_decoded_or_refused(tmp_path):
    f = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": pa.array([b"fine", b"caf\xe9"], pa.binary()),
                             "label": [0, 1]}), f)
    with pytest.raises(InputDecodeError, match="row 1"):
        load_data(str(f))
    assert load_data(str(f), encoding="latin-1").texts == [["fine"], ["café"]]


@pytest.mark.parametrize("missing", [None, math.nan])
def test_missing_text_is_refused_with_row_or_dropped_with_count(tmp_path, capsys, missing):
    f = tmp_path / "m.parquet"
    pd.DataFrame({"text": ["a good film", "fine", missing, "bad", missing],
                  "label": [1, 1, 0, 0, 1]}).to_parquet(f)
    with pytest.raises(InputDecodeError) as e:
        load_data(str(f))
    msg = str(e.value)
    assert "row 2" in msg and "'text'" in msg and "drop_missing_text=True" in msg and "\n" not in msg
    d = load_data(str(f), drop_missing_text=True)
    assert [t[0] for t in d.texts] == ["a good film", "fine", "bad"]
    assert d.labels.tolist() == [1, 1, 0] and d.idx.tolist() == [0, 1, 3]
    assert "dropped 2 of 5 rows" in capsys.readouterr().err
    assert "drop-missing-text" in d.fingerprint


def test_empty_string_is_text_not_missing(tmp_path):
    f = tmp_path / "e.csv"
    f.write_text("text,label\nhello,1\n,0\n")
    assert [t[0] for t in load_data(str(f)).texts] == ["hello", ""]


@pytest.mark.skipif(not WIRED, reason=NOT_WIRED)
def test_extract_cli_encoding_and_drop(tmp_path, tiny_path):
    f = tmp_path / "latin.csv"
    f.write_bytes(LATIN)
    args = ["extract", str(tiny_path("bert")), "--data", str(f), "--out", str(tmp_path / "s"),
            "--template", "{text} It was {mask}.", "--verbalizer", "bad,good", "--quiet"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "byte offset" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, [*args, "--encoding", "latin-1"])
    assert r.exit_code == 0, r.output
    with neurondb.open(tmp_path / "s") as st:
        assert "café and crème It was [MASK]." in st.examples().column("text").to_pylist()


class Thing:
    """Any class: torch.load(weights_only=True) refuses to unpickle it."""


def test_pickled_prompt_is_one_line(tmp_path):
    p = tmp_path / "prompt.pt"
    torch.save({"prompt": torch.zeros(2, 8), "extra": collections.OrderedDict(a=Thing())}, p)
    with pytest.raises(ExtractError) as e:
        load_prompt(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "pickled" in msg and "safetensors" in msg
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(ExtractError, match="cannot read the prompt file"):
        load_prompt(bad)
    ok = tmp_path / "ok.pt"
    torch.save(torch.ones(3, 8), ok)
    assert load_prompt(ok).n_tokens == 3
