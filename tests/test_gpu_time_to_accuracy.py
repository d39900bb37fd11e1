"""tools/gpu_time_to_accuracy.py (and its report): fixed vs progressive time to accuracy, on JAX without TensorFlow.

The data are tiny idx files of our own (tests/conftest.py), the model the tiny table TINY_SPEC; the
commands run in subprocesses on the JAX backend (the test session runs TensorFlow), which check
that TensorFlow was never imported.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import tiny_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)

import gpu_time_to_accuracy as tool  # noqa: E402
import time_to_accuracy_report  # noqa: E402

# --tiny: 512 train + 128 minival images, 64 test images.
TINY_TRAIN, TINY_TEST = 640, 64
NO_TENSORFLOW = textwrap.dedent("""
    assert 'tensorflow' not in sys.modules, sorted(m for m in sys.modules if 'tensorflow' in m)
    print('NO TENSORFLOW')
""")


def _run_python(code, env=None, timeout=300):
    pytest.importorskip("jax", reason="the script runs on JAX (pip install 'efficientnetv2-keras[jax]')")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2",
               **(env or {}))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _run_script(argv, env=None):
    """The script as a command (runpy: Keras is first imported by it), then the TensorFlow check."""
    code = (f"import runpy, sys\nsys.argv = {['gpu_time_to_accuracy.py'] + argv!r}\n"
            f"runpy.run_path({os.path.join(TOOLS, 'gpu_time_to_accuracy.py')!r}, run_name='__main__')" + NO_TENSORFLOW)
    return _run_python(code, env)


def test_dry_run_reads_a_data_dir_and_prints_both_plans(tmp_path):
    tiny_fashion_mnist(tmp_path / "fmnist", TINY_TRAIN, TINY_TEST)
    result = _run_script(["--tiny", f"--data_dir={tmp_path / 'fmnist'}", "--dry_run"])
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "train 512, minival 128, test 64 images" in out, out
    assert "fixed: fit epochs of 16 steps: 4 x (48 px, batch 32); 4.00 passes over the training images" in out
    # Two stages, 32 -> 48 px; the 32 px stage's batch keeps 48 px's activation memory: 32 * (48/32)^2 = 72.
    assert "progressive: fit epochs of 16 steps: 1 x (32 px, batch 72), 2 x (48 px, batch 32); 4.25 passes " \
           "over the training images" in out, out
    assert "Square-root scaling rule" in out  # the schedule's table
    assert "NO TENSORFLOW" in out


def test_missing_data_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _run_script(["--tiny", f"--data_dir={tmp_path / 'empty'}", "--dry_run"])
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert f"Fashion-MNIST is not in {tmp_path / 'empty'}" in message
    assert "train-images-idx3-ubyte.gz" in message and "--data_dir=FOLDER" in message
    assert "dataset-fashion-mnist" in message and "downloads nothing" in message


def test_bad_flags_are_refused_with_what_they_take():
    with pytest.raises(SystemExit):
        tool.parse_args(["--runs=fixed,slow"])
    with pytest.raises(SystemExit):
        tool.parse_args(["--sizes=224,128"])
    args = tool.parse_args(["--tiny", "--epochs=2"])
    assert (args.epochs, args.sizes, args.batch, args.runs) == (2, [32, 48], 32, ["fixed", "progressive"])


def test_crop_and_flip_keep_each_image_shifted_or_mirrored():
    images = np.arange(6 * 28 * 28, dtype=np.int64).reshape(6, 28, 28) % 251 + 1
    crops = tool.crop_and_flip(images.astype(np.uint8), np.random.default_rng(0))
    assert crops.shape == (6, 28, 28) and crops.dtype == np.uint8
    padding = tool.CROP_PADDING
    for image, crop in zip(images, crops):
        padded = np.pad(image, padding)
        candidates = [padded[r:r + 28, c:c + 28] for r in range(2 * padding + 1) for c in range(2 * padding + 1)]
        assert any(np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1]) for w in candidates)


def test_the_stream_reads_every_image_once_per_pass_at_each_epochs_shape():
    images, labels = np.zeros((10, 28, 28), np.uint8), np.arange(10, dtype=np.int32)
    stream = tool.Stream(images, labels, [(32, 4), (48, 2), (48, 2)], steps_per_epoch=2, seed=0)
    assert len(stream) == 6 and stream.shapes == [(32, 4)] * 2 + [(48, 2)] * 4
    assert stream.describe() == "1 x (32 px, batch 4), 2 x (48 px, batch 2)"
    assert stream.first_steps() == [0, 2]  # one step per distinct shape: what the warm-up compiles
    seen = np.concatenate([stream._indices(step) for step in range(len(stream))])
    assert len(seen) == 16 and stream.passes() == 1.6 and stream.passes(2) == 0.8
    assert sorted(seen[:10]) == list(range(10))  # the first pass: a permutation
    assert list(seen[10:]) != list(seen[:6])  # the second pass: another one


def _result(run, sizes, seconds, accuracies, test):
    records = [{"epoch": i + 1, "train_s": s, "minival_accuracy": a}
               for i, (s, a) in enumerate(zip(seconds, accuracies))]
    return {"run": run, "model": "efficientnetv2-b0", "image_sizes": sizes, "batches": [128],
            "fit_epochs": len(records), "passes": float(len(records)), "warmup_s": 1.0, "train_s": seconds[-1],
            "eval_s": 0.5,
            "test_accuracy": test, "records": records, "eval_size": 224, "train_examples": 55000,
            "backend": "jax", "device": "NVIDIA H100 80GB HBM3", "precision": "mixed_bfloat16"}


def test_the_table_times_each_run_to_the_fixed_runs_final_minival_accuracy():
    results = {"fixed": _result("fixed", [224], [10, 20, 30], [0.80, 0.90, 0.88], 0.87),
               "progressive": _result("progressive", [128, 224], [4, 8, 12], [0.70, 0.89, 0.91], 0.885)}
    text = time_to_accuracy_report.table(results)
    assert ("| run | image sizes | epochs | wall s to 0.8800 (fixed's final minival accuracy) | total wall s | "
            "test accuracy |") in text
    assert "| fixed | 224 | 3.0 | 20.0 | 30.0 | 0.8700 |" in text  # fixed itself passed 0.88 at epoch 2
    assert "| progressive + batch scaling | 128 -> 224 | 3.0 | 8.0 (2.50x faster) | 12.0 | 0.8850 |" in text
    results["progressive"]["records"][1]["minival_accuracy"] = 0.5
    results["progressive"]["records"][2]["minival_accuracy"] = 0.6
    assert "| 128 -> 224 | 3.0 | not reached | 12.0 |" in time_to_accuracy_report.table(results)


@pytest.mark.slow
def test_tiny_end_to_end_run_on_jax_writes_the_table_and_the_plot(tmp_path):
    home = tmp_path / "keras_home"
    tiny_fashion_mnist(home / "datasets" / "fashion-mnist", TINY_TRAIN, TINY_TEST)
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{os.path.join(ROOT, 'tests')!r}, {TOOLS!r}]
        from conftest import TINY_SPEC
        import gpu_time_to_accuracy
        gpu_time_to_accuracy.main(["--tiny", "--out={out}"], model=TINY_SPEC)
    """) + NO_TENSORFLOW
    result = _run_python(code, env={"KERAS_HOME": str(home)}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NO TENSORFLOW" in result.stdout, result.stdout[-3000:]
    table = (out / "table.md").read_text()
    assert "| fixed | 48 | 4.0 |" in table and "| progressive + batch scaling | 32 -> 48 | 4.2 |" in table, table
    assert (out / "time_to_accuracy.png").stat().st_size > 1000
    progressive = json.loads((out / "progressive.json").read_text())
    assert [(r["image_size"], r["batch_size"]) for r in progressive["records"]] == [(32, 72), (48, 32), (48, 32)]
    assert progressive["warmup_s"] > 0 and progressive["device"] == "cpu" and progressive["backend"] == "jax"
    fixed = json.loads((out / "fixed.json").read_text())
    assert len(fixed["records"]) == 4 and 0.0 <= fixed["test_accuracy"] <= 1.0


def test_the_clock_stops_the_run_once_the_budget_is_spent():
    class Model:
        trainable_variables = [np.zeros(3, np.float32)]
        stop_training = False

    stream = tool.Stream(np.zeros((8, 28, 28), np.uint8), np.zeros(8, np.int32), [(32, 4), (48, 2)], 2, seed=0)
    clock = tool.EpochClock(Model(), lambda model: 0.5, stream, budget_s=3600)
    clock.start(0)
    clock.stop(0, {"loss": 2.0})
    assert not clock.model.stop_training
    clock.budget_s = 0.0
    clock.start(1)
    clock.stop(1, {"loss": 1.0})
    assert clock.model.stop_training  # no further epoch starts
    assert [(r["epoch"], r["image_size"], r["batch_size"], r["minival_accuracy"]) for r in clock.records] == [
        (1, 32, 4, 0.5), (2, 48, 2, 0.5)]
    assert 0 <= clock.records[0]["train_s"] <= clock.records[1]["train_s"] == clock.train_seconds


def test_the_warm_up_compiles_every_stage_shape_and_puts_the_initial_state_back(tiny_spec):
    import keras

    images, labels = np.random.default_rng(0).integers(0, 255, (16, 28, 28), dtype=np.uint8), np.arange(16) % 10
    stream = tool.Stream(images, labels.astype(np.int32), [(32, 8), (40, 4)], 2, seed=0)
    model = tool.build_classifier(tiny_spec, 1e-2, seed=0)
    variables = list(model.variables) + list(model.optimizer.variables)
    before = [keras.ops.convert_to_numpy(v).copy() for v in variables]
    shapes_seen = []
    original_batch = stream.batch
    stream.batch = lambda step: shapes_seen.append(stream.shapes[step]) or original_batch(step)
    evaluated = []
    tool.warm_up(model, stream, evaluated.append)
    assert sorted(set(shapes_seen)) == [(32, 8), (40, 4)] and evaluated == [model]
    for variable, value in zip(variables, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value, err_msg=variable.path)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0
