"""The architecture as tests (docs/ARCHITECTURE.md): no import cycles between the layers, one
home for each rule, no function over 80 lines. Imports inside functions count too."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "neurondb"


def _sources():
    for p in sorted(PKG.rglob("*.py")):
        yield p, p.read_text()


def _layer_graph() -> dict[str, set[str]]:
    """``{subpackage: subpackages it imports}`` (top-level modules and errors aside)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for p, text in _sources():
        parts = p.relative_to(PKG).with_suffix("").parts
        if len(parts) < 2:
            continue
        for n in ast.walk(ast.parse(text)):
            mods = ([n.module] if isinstance(n, ast.ImportFrom) and n.module else
                    [a.name for a in n.names] if isinstance(n, ast.Import) else [])
            for m in mods:
                bits = m.split(".")
                if bits[0] == "neurondb" and len(bits) > 1 and bits[1] != parts[0] \
                        and (PKG / bits[1]).is_dir():
                    edges[parts[0]].add(bits[1])
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(v: str, path: list[str]) -> list[str] | None:
        state[v] = 1
        for w in sorted(edges.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (found := visit(w, path + [w])):
                return found
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state and (found := visit(v, [v])):
            return found
    return None


def test_no_import_cycles_between_layers():
    edges = _layer_graph()
    assert _cycle(edges) is None, " -> ".join(_cycle(edges))
    # the runtime layer is below the commands: it imports none of them
    assert not edges["runtime"] & {"extract", "tune", "intervene", "query", "report", "cli"}
    assert not edges["store"] & {"query", "runtime", "extract", "tune", "intervene"}
    for cmd in ("extract", "tune", "intervene"):
        assert not edges[cmd] & ({"extract", "tune", "intervene"} - {cmd}), cmd


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _files_matching(pattern: str) -> set[str]:
    rx = re.compile(pattern)
    return {str(p.relative_to(PKG)) for p, text in _sources() if rx.search(text)}


def test_readouts_are_compared_by_name_only_in_their_registry():
    names = "mlm|causal|seq2seq|classifier|head|none"
    hits = _files_matching(rf"readout\w*\s*(==|!=|in)\s*\(?\s*[\"']({names})[\"']"
                           rf"|\br\s*(==|in)\s*\(?[\"']({names})[\"']")
    assert hits == set(), hits


def test_one_hook_class_and_one_batch_loop():
    assert _files_matching(r"register_forward_pre_hook\(") == {"runtime/hooks.py"}
    # the batch loop: examples cut into batch_size slices and encoded
    assert _files_matching(r"range\(0, len\([^)]*\), [a-z_.]*batch_size\)") == {"runtime/batches.py"}
    assert _files_matching(r"\.encode\(ids, \[") == {"runtime/batches.py"}


def test_the_template_rule_has_one_home():
    # "argument, then the prompt's metadata, then the preset": only resolve_labels reads the
    # prompt's template from its meta
    assert _files_matching(r"meta\.get\(\"template\"\)") == {"runtime/templates.py"}


def test_no_function_over_80_lines():
    long = []
    for p, text in _sources():
        for n in ast.walk(ast.parse(text)):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = n.end_lineno - n.lineno + 1
                if length > 80:
                    long.append(f"{p.relative_to(PKG)}:{n.lineno} {n.name} ({length} lines)")
    assert not long, long
