"""Screenshots of the store browser for the docs: the neuron page and the SQL console.

    python bench/serve_screenshots.py STORE [--neuron encoder/5/1385] [--run RUN] [--out docs]

Serves STORE on a free loopback port and saves ``serve_neuron.png`` and ``serve_sql.png``
under ``--out`` (headless Chromium through Debian's chromedriver, as
``tests/serve/test_browser.py`` drives it). The docs' screenshots were made from a MiniLM
store (``neurondb.extract("minilm", "movie_reviews", S, split="validation",
positions="mask,first", max_examples=100, stats_split="train")``, a second run
``validation-all`` with ``positions="all"``, then ``neurondb rank S --method predictivity``)::

    python bench/serve_screenshots.py S --neuron encoder/5/1275 --run validation-all \
        --sql-run movie_reviews-validation
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurondb.serve import create_app  # noqa: E402
from neurondb.store import open_store  # noqa: E402
from tests.serve.live import chrome, live_server  # noqa: E402

SQL = """-- the examples on which a neuron fires most at the mask, with their text
SELECT e.example_id, round(a.value, 3) AS value, e.label, e.text
FROM activations(run := '{run}', layer := {layer}, neuron := {neuron}) a
JOIN examples e USING (run, example_id)
WHERE a.slot = 'mask'
ORDER BY a.value DESC LIMIT 8"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--neuron", default=None, help="stack/layer/neuron (default: the top of "
                    "the first ranking)")
    ap.add_argument("--run", default=None, help="run whose examples the neuron page shows")
    ap.add_argument("--sql-run", default=None, help="run of the console's query (default: "
                    "the first per-token run)")
    ap.add_argument("--out", default="docs")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    st = open_store(a.store)
    app = create_app(st)
    neuron = f"/neurons/{a.neuron}" if a.neuron else None
    with live_server(app) as url, chrome(1400, 1100) as d:
        if neuron is None:
            from neurondb.serve.pages.overview import first_neuron

            neuron = first_neuron(app.context)
        _, _, stack_layer_neuron = neuron.partition("/neurons/")
        _, layer, index = stack_layer_neuron.split("/")
        sql_run = a.sql_run or next(i.run for i in st.runs() if i.mode == "tokens")
        sql = SQL.format(run=sql_run, layer=layer, neuron=index)
        shots = {"neuron": neuron + (f"?run={quote(a.run)}" if a.run else ""),
                 "sql": "/sql?q=" + quote(sql)}
        for name, path in shots.items():
            d.get(url + path)
            d.save_screenshot(str(out / f"serve_{name}.png"))
            print(f"{out / f'serve_{name}.png'}: {path}")
        errors = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
        print("console errors:", errors or "none")
    st.close()


if __name__ == "__main__":
    main()
