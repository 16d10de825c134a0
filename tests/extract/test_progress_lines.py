"""Progress outside a terminal: `extract` and `tune` with stdout/stderr piped print periodic
plain lines (done/total, rate, ETA; tokens/s for extract, loss for tune), and the plain
reporter keeps printing while a task stalls (no silent stretch longer than the interval)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import pytest
from rich.console import Console
from rich.progress import TextColumn

from neurondb.errors import UsageError
from neurondb.runtime.progress import PlainProgress, Reporter, progress_interval

CLI = [sys.executable, "-c", "from neurondb.cli.app import main; main()"]
# "<desc>: done/total (p%), rate, ..., elapsed h:mm:ss, ETA h:mm:ss | done"
LINE = re.compile(r"^(?P<desc>[^:\n]+): (?P<done>[\d,]+)/(?P<total>[\d,]+) \(\d+%\), "
                  r"[\d,.]+ (?P<unit>\w+)/s, (?P<rest>.*), elapsed \d+:\d\d:\d\d, "
                  r"(?P<end>ETA (\d+:\d\d:\d\d|\?)|done)$", re.M)


def _piped(args: list[str], seconds: str = "0") -> subprocess.CompletedProcess:
    env = dict(os.environ, NEURONDB_PROGRESS_SECONDS=seconds, HF_HUB_OFFLINE="1",
               COLUMNS="200")
    env.pop("FORCE_COLOR", None)
    env.pop("TTY_INTERACTIVE", None)
    return subprocess.run(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env, timeout=300)


def test_extract_piped_prints_progress_lines(tmp_path, tiny_path, sentiment_dir):
    out = tmp_path / "store"
    res = _piped(["extract", str(tiny_path("bert")), "--data", str(sentiment_dir),
                  "--template", "{text} It was {mask}.", "--verbalizer", "bad,good",
                  "--batch-size", "4", "--out", str(out)])
    assert res.returncode == 0, res.stdout
    lines = list(LINE.finditer(res.stdout))
    assert len(lines) >= 3, res.stdout  # 12 examples in batches of 4: one line per batch
    assert all(m["total"] == "12" and m["unit"] == "examples" for m in lines)
    assert all("tok/s" in m["rest"] for m in lines), res.stdout
    assert any(m["end"].startswith("ETA") for m in lines)
    assert lines[-1]["done"] == "12" and lines[-1]["end"] == "done"
    assert "\x1b[" not in res.stdout  # no terminal control codes in a log


def test_tune_piped_prints_progress_lines_with_loss(tmp_path, tiny_path, sentiment_dir):
    res = _piped(["tune", str(tiny_path("bert")), str(sentiment_dir), "--out", str(tmp_path / "p"),
                  "--seeds", "1", "--prompt-tokens", "2", "--epochs", "2", "--batch-size", "8",
                  "--patience", "0", "--template", "{text} It was {mask}.",
                  "--verbalizer", "terrible,great"])
    assert res.returncode == 0, res.stdout
    lines = [m for m in LINE.finditer(res.stdout) if m["desc"] == "seed 1"]
    assert len(lines) >= 3, res.stdout  # 24 examples / 8 = 3 steps per epoch, 2 epochs
    assert all(m["total"] == "6" and m["unit"] == "steps" for m in lines)
    assert all(re.search(r"loss \d+\.\d{4}", m["rest"]) for m in lines), res.stdout
    assert any(m["end"].startswith("ETA") for m in lines)
    assert lines[-1]["done"] == "6" and lines[-1]["end"] == "done"


def _plain(interval: float, buf: io.StringIO) -> PlainProgress:
    console = Console(file=buf, force_terminal=False, width=200)
    return PlainProgress(console, (TextColumn("loss {task.fields[loss]}"),), interval, "steps")


def test_plain_lines_are_periodic_and_cover_a_stall():
    buf = io.StringIO()
    bar = _plain(0.2, buf)
    bar.start()
    t = bar.add_task("seed 1", total=100, loss="-")
    for _ in range(10):  # fast updates within one interval: no line for them
        bar.update(t, advance=1, loss="0.5000")
    assert buf.getvalue() == ""
    time.sleep(0.7)  # a stall: the heartbeat still prints
    stalled = buf.getvalue().splitlines()
    assert 2 <= len(stalled) <= 4, stalled
    assert all(re.match(r"seed 1: 10/100 \(10%\), [\d.]+ steps/s, loss 0\.5000, elapsed "
                        r"\d:\d\d:\d\d, ETA \d:\d\d:\d\d$", s) for s in stalled), stalled
    bar.update(t, advance=90)
    bar.stop()
    last = buf.getvalue().splitlines()[-1]
    assert last.startswith("seed 1: 100/100 (100%)") and last.endswith("done")
    assert len(buf.getvalue().splitlines()) == len(stalled) + 1  # stop adds nothing more


def test_unset_field_is_left_out_and_unknown_total_has_no_eta():
    buf = io.StringIO()
    bar = _plain(0.0, buf)
    t = bar.add_task("x", total=None, loss="-")
    bar.update(t, advance=3)
    bar.stop()
    line = buf.getvalue().strip()
    assert line.startswith("x: 3, ") and "loss" not in line and line.endswith("ETA ?")


def test_reporter_uses_plain_lines_off_a_terminal(monkeypatch, capsys):
    monkeypatch.setenv("NEURONDB_PROGRESS_SECONDS", "0")
    rep = Reporter(True)
    assert not rep.live  # pytest's captured stderr is not a terminal
    task = rep.task("run a", total=4)
    rep.advance(task, 2, tokens=20)
    rep.advance(task, 2, tokens=20)
    rep.close()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("run a: 2/4 (50%)") and " tok/s" in err[0]
    assert err[1].startswith("run a: 4/4 (100%)") and err[1].endswith("done")


def test_progress_interval_env(monkeypatch):
    monkeypatch.delenv("NEURONDB_PROGRESS_SECONDS", raising=False)
    assert progress_interval() == 10.0
    monkeypatch.setenv("NEURONDB_PROGRESS_SECONDS", "2.5")
    assert progress_interval() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("NEURONDB_PROGRESS_SECONDS", bad)
        with pytest.raises(UsageError, match="NEURONDB_PROGRESS_SECONDS"):
            progress_interval()
