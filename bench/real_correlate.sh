#!/usr/bin/env bash
# Issue 14 on real data: Pearson correlation of every FFN neuron of MiniLM with every neuron
# of its 50 %-pruned export, over the same tokens (200 movie-review sentences, every token).
# The export keeps the top half of each layer by a random ranking, so a kept neuron of layer 0
# sees the same input as before (r = 1 with itself) and deeper layers drift apart.
#   bash bench/real_correlate.sh [OUT]      (default: bench_out/correlate)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench_out/correlate}
NDB=${NDB:-.venv/bin/neurondb}
rm -rf "$OUT"; mkdir -p "$OUT"
KW=(--data movie_reviews --split validation --readout none --positions all --max-examples 200 --quiet)
"$NDB" extract minilm "${KW[@]}" --run mr-full --out "$OUT/full"
"$NDB" rank "$OUT/full" --method random --seed 0 --name random
"$NDB" mask "$OUT/full" --ranking random --fraction 0.5 --name removed --out "$OUT/removed.parquet"
# the mask lists the neurons to remove (a random half): the export keeps the other half
"$NDB" prune minilm --mask "$OUT/removed.parquet" --out "$OUT/minilm-pruned50"
"$NDB" extract "$OUT/minilm-pruned50" "${KW[@]}" --run mr-pruned --out "$OUT/pruned"
/usr/bin/time -f "correlate-neurons: wall %e s, peak RSS %M KB" \
    "$NDB" correlate-neurons "$OUT/pruned" --runs mr-full,mr-pruned --with "$OUT/full" --top 3 \
    --png "$OUT/max_corr.png" --name pruned_vs_full
"$NDB" query "$OUT/pruned" --with "$OUT/full" "SELECT layer, count(*) AS neurons,
    round(avg(corr), 3) AS mean_best_r, round(quantile_cont(corr, 0.1), 3) AS p10,
    round(min(corr), 3) AS min_best_r FROM neuron_correlations
    WHERE partner_rank = 1 GROUP BY layer ORDER BY layer"
