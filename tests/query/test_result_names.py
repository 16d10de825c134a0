"""Default result names (``neurondb.query.results.default_name``): one per list of inputs."""

from __future__ import annotations

import itertools

from neurondb.query.results import check_name, default_name


def test_every_input_is_in_the_name():
    assert default_name("ncorr", ["a", "b"]) == "ncorr_a+b"
    assert default_name("predictivity", ["p1", "p2", "p3"]) == "predictivity_p1+p2+p3"
    assert default_name("ig") == "ig"
    assert default_name("ig", ["sst2-train"]) == "ig_sst2-train"


def test_different_inputs_never_share_a_default_name():
    runs = ["r" * 60 + str(i) for i in range(4)] + ["a b", "a_b", "a/b", "é"]
    seen: dict[str, tuple] = {}
    for n in (1, 2, 3):
        for combo in itertools.permutations(runs, n):
            name = default_name("on", list(combo))
            assert check_name(name, "overlaps") == name and len(name) <= 128
            assert seen.setdefault(name, combo) == combo, (name, combo, seen[name])
