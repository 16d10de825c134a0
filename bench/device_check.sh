#!/usr/bin/env bash
# Issue 14, item 6: the GPU checks as one command for the `device` machine (an H100/H200 with
# its own Python, torch and transformers; nothing to fetch there). What it lacks of neurondb's
# dependencies travels as wheels in .whl/ (made here once: `make device-wheels`; duckdb only,
# the extract path's one missing package). On this machine, with a device lent:
#   run(command="bash bench/device_check.sh", carry=[".whl"], timeout_s=480)
# It prints, and writes under $OUT (default bench_out/device): nvidia-smi, the versions, and
# bench/extract_gpu.py's table (prompt/mask capture and --profile against a plain forward,
# RoBERTa-base- and Llama-1B-shaped random models, batch 64 and 256), each step under its own
# time limit so that a slow one still leaves the others' figures. Extra arguments go to
# bench/extract_gpu.py (a CPU smoke run: bash bench/device_check.sh --device cpu --tiny).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench_out/device}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if ! "$PY" -c "import duckdb" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/nd-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/nd-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv; nproc; "$PY" -c "import torch, transformers, duckdb, h5py, neurondb
print('python', __import__('platform').python_version(), 'torch', torch.__version__,
      'transformers', transformers.__version__, 'duckdb', duckdb.__version__,
      'cuda', torch.cuda.is_available())"; } 2>&1 | tee "$OUT/versions.txt" || exit 1
rc=0
timeout "${EXTRACT_GPU_LIMIT_S:-360}" "$PY" bench/extract_gpu.py "$@" 2>&1 \
    | tee "$OUT/extract_gpu.txt" || rc=$?
echo "bench/extract_gpu.py exit status $rc" | tee -a "$OUT/extract_gpu.txt"
exit $rc
