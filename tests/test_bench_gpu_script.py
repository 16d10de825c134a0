"""bench/device_check.sh and bench/extract_gpu.py, the GPU checks of issue 14 (item 6), run
end to end on tiny models on the CPU: the prepared device command must work the first time a
GPU is lent (its device time is short), so its every step is exercised here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_device_check_runs_every_mode_and_model_on_tiny_models(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "device_check.sh"), "--device", "cpu", "--tiny",
         "--examples", "12", "--batch-sizes", "4,8", "--model-dtype", "float32",
         "--modes", "prompt-mask,profile,all", "--workdir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (tmp_path / "out" / "extract_gpu.txt").read_text()
    assert "tiny models (smoke test)" in table
    rows = [line.split() for line in table.splitlines()
            if line.startswith(("roberta-base-shaped", "llama-1b-shaped"))]
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (m, b, mode) for m in ("roberta-base-shaped", "llama-1b-shaped") for b in ("4", "8")
        for mode in ("prompt-mask", "profile", "all")}
    for r in rows:  # plain tok/s, extract tok/s, fraction, store MB: measured, positive
        plain, tps = (float(x.replace(",", "")) for x in r[3:5])
        assert plain > 0 and tps > 0 and float(r[5]) == pytest.approx(tps / plain, abs=2e-3)
        assert float(r[6]) > 0
    assert "exit status 0" in table
    assert "cuda False" in (tmp_path / "out" / "versions.txt").read_text()
    assert not list(tmp_path.glob("nd-gpu-*")), "the stores are removed"


def test_extract_gpu_refuses_a_full_size_run_without_cuda(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "extract_gpu.py"),
                           "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "only --tiny runs" in proc.stderr
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "extract_gpu.py"),
                           "--modes", "bogus", "--tiny", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown mode 'bogus'" in proc.stderr
