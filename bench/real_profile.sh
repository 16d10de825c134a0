#!/usr/bin/env bash
# Issue 14 on real data: a profile of MiniLM over every token of all 67,349 SST-2 training
# sentences (../shared/data/sst2), its wall time and store size against what a per-token
# capture (--positions all) would write, and the top tokens of three neurons.
#   bash bench/real_profile.sh [OUT]      (default: bench_out/sst2-profile)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench_out/sst2-profile}
NDB=${NDB:-.venv/bin/neurondb}
rm -rf "$OUT"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -f "wall %e s, CPU %U+%S s, peak RSS %M KB" \
    "$NDB" extract minilm --data ../shared/data/sst2 --split train --readout none \
    --profile --top-k 20 --batch-size 32 --run sst2-train-profile --out "$OUT"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
du -sh "$OUT"
"$NDB" query "$OUT" "SELECT count(*) AS neurons, max(count) AS tokens FROM neuron_profile"
# three neurons: the most peaked one of layers 1, 3 and 5 (largest max over mean + 3 std)
"$NDB" query "$OUT" "SELECT layer, neuron, round(max, 3) AS max, round(mean, 3) AS mean,
    round(frac_positive, 3) AS frac_positive FROM neuron_profile
    WHERE layer IN (1, 3, 5) QUALIFY row_number() OVER (PARTITION BY layer
    ORDER BY (max - mean) / nullif(std, 0) DESC) = 1 ORDER BY layer"
for ln in $("$NDB" query "$OUT" "SELECT layer || ':' || neuron FROM neuron_profile
        WHERE layer IN (1, 3, 5) QUALIFY row_number() OVER (PARTITION BY layer
        ORDER BY (max - mean) / nullif(std, 0) DESC) = 1 ORDER BY layer" --format csv | tail -n +2 | tr -d "\""); do
    layer=${ln%%:*}; neuron=${ln##*:}
    echo "== encoder layer $layer neuron $neuron"
    "$NDB" query "$OUT" "SELECT rank, round(value, 2) AS value, context FROM
        top_contexts('sst2-train-profile', 'encoder', $layer, $neuron, k := 5, width := 4)"
done
