"""Time of the store browser's neuron page, warm (``neurondb serve``; target ≤ 300 ms).

    python bench/serve.py [STORE] [--neuron encoder/5/1275] [--run RUN] [--repeat 20]

Without STORE a MiniLM-shaped synthetic store (6 layers x 1536 neurons, 200 sentences with
every token captured, a running-statistics run and a predictivity ranking) is written to a
temporary directory. The app is called in-process (Starlette's test client: routing,
validation, the store reads, templates, SVG); the first request warms the caches (run layouts,
token indexes, correlations), then ``--repeat`` requests are timed. Prints the median and max
for the neuron page, and the median of the other pages.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starlette.testclient import TestClient  # noqa: E402

from neurondb.serve import create_app  # noqa: E402
from neurondb.store import open_store  # noqa: E402

WIDTHS = {"encoder": (1536,) * 6}


def synthetic_store(root: Path) -> Path:
    """A MiniLM-shaped store: 200 review-like sentences, every token captured."""
    import numpy as np

    from neurondb.query import predictivity
    from neurondb.testing_stores import make_store, write_stats_run, write_text_run
    from tests.serve.conftest import NEG, POS

    make_store(root, WIDTHS, name="minilm-shaped")
    texts = [f"{t} , take {i}" for i in range(20) for t in (*POS, *NEG)]
    labels = [1] * len(POS) + [0] * len(NEG)
    labels = labels * 20
    write_text_run(root, "ev", "validation", texts, labels, ["neg", "pos"],
                   plants=[("encoder", 5, 1275, "great", 3.0)])
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    acts = {("encoder", la): rng.normal(size=(200, 2, 1536)) for la in range(6)}
    write_stats_run(root, "tr", "train", y, ["mask", "first"], acts, label_names=["neg", "pos"])
    st = open_store(root)
    predictivity(st, eval="ev", train="ev", slots="pos:1", name="skill")
    st.close()
    return root


def timed(client: TestClient, url: str, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = client.get(url)
        out.append(time.perf_counter() - t)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", nargs="?")
    ap.add_argument("--neuron", default="encoder/5/1275")
    ap.add_argument("--run", default=None)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    tmp = None
    if a.store is None:
        tmp = tempfile.TemporaryDirectory(prefix="neurondb-bench-serve-")
        a.store = str(synthetic_store(Path(tmp.name) / "store"))
    st = open_store(a.store)
    url = f"/neurons/{a.neuron}" + (f"?run={a.run}" if a.run else "")
    with TestClient(create_app(st), base_url="http://127.0.0.1") as c:
        t0 = time.perf_counter()
        c.get(url)
        cold = time.perf_counter() - t0
        warm = timed(c, url, a.repeat)
        others = {u: statistics.median(timed(c, u, 3)) for u in
                  ("/", f"/runs/{st.runs()[0].run}", "/sql?q=SELECT+*+FROM+runs")}
    runs = ", ".join(f"{i.run} ({i.mode}, {sum(i.n_rows.values()) or i.n_examples} rows)"
                     for i in st.runs())
    print(f"store {a.store}: {runs}")
    print(f"neuron page {url}: first {1000 * cold:.0f} ms; warm median "
          f"{1000 * statistics.median(warm):.0f} ms, max {1000 * max(warm):.0f} ms "
          f"({a.repeat} requests)")
    for u, t in others.items():
        print(f"  {u}: warm median {1000 * t:.0f} ms")
    st.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
