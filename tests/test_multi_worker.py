"""Multi-worker training with tf.distribute.MultiWorkerMirroredStrategy: worker processes on 127.0.0.1.

Each worker is `tools/train.py --strategy=multi_worker` (through tests/train_runner.py: the tiny model
table) with its own TF_CONFIG. The two-worker run takes minutes on 2 shared cores, hence slow; the
lone-worker checks (timeout message, SIGTERM) are fast.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "tests", "train_runner.py")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker(index, addresses, model_dir, overrides, tmp_dir, mode="train", **popen):
    tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp_dir))
    return subprocess.Popen(
        [sys.executable, RUNNER, f"--model_dir={model_dir}", "--strategy=multi_worker", f"--mode={mode}",
         f"--override={overrides}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )


def test_a_lone_worker_fails_within_the_timeout_with_a_message(tmp_path):
    port, absent = free_ports(2)
    addresses = [f"127.0.0.1:{port}", f"127.0.0.1:{absent}"]
    process = worker(0, addresses, tmp_path / "run", "runtime.worker_timeout=3", tmp_path)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stderr[-3000:]
    assert f"train: error: multi_worker: worker 1 at 127.0.0.1:{absent} did not come up within 3 s " \
           "(runtime.worker_timeout)" in stderr  # one line, the usage-error form of every command
    assert "Traceback" not in stderr
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_waiting_worker_honours_sigterm(tmp_path):
    port, absent = free_ports(2)
    addresses = [f"127.0.0.1:{port}", f"127.0.0.1:{absent}"]
    process = worker(0, addresses, tmp_path / "run", "runtime.worker_timeout=600", tmp_path)
    # Wait until it listens on its own address (it is then waiting for worker 1), then SIGTERM.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)  # a hang would time out here
    assert process.returncode == -signal.SIGTERM


@pytest.mark.slow
def test_two_workers_train_two_progressive_stages_and_only_the_chief_writes(tmp_path):
    # Synchronous training keeps the workers identical: BatchNorm statistics are the global batch's
    # (model.sync_batch_norm, on under multi_worker), and RandAugment runs in every stage on both.
    model_dir = tmp_path / "run"
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    overrides = ",".join([
        "train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=16", "progressive.num_stages=2",
        "progressive.image_size=[32,40]", "data.source_options.image_size=40", "data.eval_size=32",
        "eval.batch_size=180", "eval.validation_freq=1", "data.cache=false", "runtime.worker_timeout=120",
        "data.augment=randaug", "progressive.randaug_magnitude=[1,5]",  # RandAugment in every stage
    ])
    temporary = [tmp_path / f"tmp{i}" for i in range(2)]
    for folder in temporary:
        folder.mkdir()
    processes = [worker(i, addresses, model_dir, overrides, temporary[i], mode="traineval") for i in range(2)]
    outputs = [p.communicate(timeout=900) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stdout[-2000:] + stderr[-3000:]
    # Both workers ran both stages.
    for stdout, _ in outputs:
        assert "epoch 1 runs stage 1/2 (image_size 32" in stdout and "epoch 2 runs stage 2/2 (image_size 40" in stdout
    # Only the chief (worker 0) wrote into model_dir; worker 1 wrote into its private folder only.
    assert {"config.yaml", "last.keras", "log.csv", "results.json", "backup"} <= set(os.listdir(model_dir))
    assert os.listdir(temporary[0]) == []
    (private,) = os.listdir(temporary[1])
    assert private.endswith("-worker1")
    # Identical weights on both workers (synchronous training).
    import keras
    import numpy as np

    chief = keras.models.load_model(model_dir / "last.keras")
    other = keras.models.load_model(temporary[1] / private / "last.keras")
    different = [a.path for a, b in zip(chief.weights, other.weights) if not np.array_equal(a.numpy(), b.numpy())]
    assert different == [], different
    results = json.loads((model_dir / "results.json").read_text())
    assert results["replicas"] == 2 and [s["image_size"] for s in results["stages"]] == [32, 40]
    # traineval: validated on the minival and evaluated on the test split, the same numbers on both workers.
    other_results = json.loads((temporary[1] / private / "results.json").read_text())
    assert [e["role"] for e in results["evaluations"]] == [e["role"] for e in other_results["evaluations"]]
    assert results["evaluations"][0]["accuracy"] == other_results["evaluations"][0]["accuracy"]
    assert any(row.get("val_accuracy") not in (None, "") for row in csv.DictReader(open(model_dir / "log.csv")))
