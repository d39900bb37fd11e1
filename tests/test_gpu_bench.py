"""tools/gpu_bench.py runs where JAX and Keras exist but TensorFlow does not."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")


def test_gpu_bench_tables_and_projection_without_tensorflow():
    # The measurement itself is replaced (an XLA compile per configuration takes minutes on CPU);
    # everything else runs: the paper stages of V2-S, the batch scaling, the tables, the projection.
    code = """
import sys
sys.path.insert(0, "tools")
import gpu_bench

def fake_measure(impl, model_name, size, batch, steps, warmup):
    per_step = 0.05 + batch * size * size * 2e-8  # a fixed launch cost + a per-pixel cost
    return batch / (per_step * (1.25 if impl == "ours" else 1.0)), None, 0.0

gpu_bench.measure = fake_measure
gpu_bench.main(["--precision=float32"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
assert not loaded, loaded
print("no tensorflow")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "no tensorflow" in result.stdout, result.stderr[-3000:]
    out = result.stdout
    for row in ("| fixed | 128 | 128 |", "| fixed | 300 | 128 |", "| scaled | 128 | 704 |", "| scaled | 185 | 336 |",
                "| scaled | 242 | 200 |", "| scaled | 300 | 128 |"):
        assert row in out, out
    assert "| 0.80 |" in out  # ours / keras
    assert "Projected training time of the schedule (350 epochs x 1281167 images" in out
    assert "scaled batch, ours " in out and " h on one " in out


@pytest.mark.slow
def test_gpu_bench_smoke_run_on_cpu():
    result = subprocess.run(
        [sys.executable, "tools/gpu_bench.py", "--model=b0", "--sizes=32,48", "--batch=8", "--steps=1",
         "--warmup=0", "--precision=float32"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| fixed | 32 | 8 |" in out and "| scaled | 32 | 16 |" in out  # 8 * (48/32)^2 = 18 -> 16
    assert "Projected training time" in out and "tensorflow was imported" not in out
