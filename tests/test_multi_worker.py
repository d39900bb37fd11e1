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


def worker(index, addresses, model_dir, overrides, tmp_dir, mode="train", env=None, **popen):
    tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp_dir),
               **(env or {}))
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


# 3 epochs of one step, no stages; a backup after every epoch. Both workers kill themselves at the start
# of epoch 3 (RUNNER_KILL_AT_EPOCH), so each holds the backups after epochs 2 and 1: the chief in
# model_dir/backup, worker 1 in its private folder.
RESUME_OVERRIDES = ",".join([
    "train.epochs=3", "train.steps_per_epoch=1", "train.batch_size=16", "progressive.enabled=false",
    "data.train_size=32", "data.source_options.image_size=32", "data.eval_size=32", "data.cache=false",
    "runtime.worker_timeout=120", "train.backup_interval_s=0",
])


def _two_workers(tmp_path, model_dir, env=None):
    """Runs both workers to the end; [(returncode, stdout, stderr)] of worker 0 (the chief) and worker 1."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    temporary = [tmp_path / f"tmp{i}" for i in range(2)]
    for folder in temporary:
        folder.mkdir(exist_ok=True)
    processes = [worker(i, addresses, model_dir, RESUME_OVERRIDES, temporary[i], env=env) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=600) for p in processes]
    finally:
        for process in processes:  # a worker left waiting for a collective its peer never joins
            if process.poll() is None:
                process.kill()
                process.communicate()
    return [(p.returncode, *output) for p, output in zip(processes, outputs)]


def _interrupted_two_worker_run(tmp_path):
    model_dir = tmp_path / "run"
    killed = _two_workers(tmp_path, model_dir, env={"RUNNER_KILL_AT_EPOCH": "3"})
    assert [code for code, _, _ in killed] == [-9, -9], killed[0][2][-3000:] + killed[1][2][-3000:]
    from efficientnetv2_keras.runs import backup_epochs

    (private,) = [name for name in os.listdir(tmp_path / "tmp1") if name.endswith("-worker1")]
    assert backup_epochs(model_dir / "backup") == [2, 1] == backup_epochs(tmp_path / "tmp1" / private / "backup")
    return model_dir, tmp_path / "tmp1" / private


def _assert_resumed(finished, model_dir, after_epoch):
    for code, stdout, stderr in finished:
        assert code == 0, stdout[-2000:] + stderr[-3000:]
        said = f"the workers resume after epoch {after_epoch}, the newest backup every one of them can restore"
        assert said in stdout
        assert f"Epoch {after_epoch + 1}/3" in stdout and f"Epoch {after_epoch}/3" not in stdout
    assert f"resuming {model_dir} at epoch {after_epoch + 1} of 3" in finished[0][1]
    results = json.loads((model_dir / "results.json").read_text())
    assert results["epochs"] == 3 and results["resumed_at_epoch"] == after_epoch + 1


@pytest.mark.slow
def test_two_workers_resume_from_the_chiefs_backup_when_a_workers_private_folder_is_lost(tmp_path):
    import shutil

    model_dir, private = _interrupted_two_worker_run(tmp_path)
    shutil.rmtree(private)  # worker 1's machine was replaced: its temporary folder is gone
    _assert_resumed(_two_workers(tmp_path, model_dir), model_dir, after_epoch=2)


@pytest.mark.slow
def test_two_workers_killed_between_their_backup_writes_resume_where_both_can(tmp_path):
    model_dir, private = _interrupted_two_worker_run(tmp_path)
    # The chief was killed before its backup of epoch 2 was in place, worker 1 after its own: the chief's
    # backups are the run's, so both resume after epoch 1.
    (model_dir / "backup" / "epoch-0002.weights.h5").unlink()
    _assert_resumed(_two_workers(tmp_path, model_dir), model_dir, after_epoch=1)


def test_the_workers_agree_on_the_newest_of_the_chiefs_backups_every_one_can_restore():
    from efficientnetv2_keras.training.workers import MAX_EPOCHS_SAID, agree_on_epoch

    def row(chief, task_id, epochs, unreadable=0):  # WorkerMeeting.backups_row of a 'worker' task
        padding = [0.0] * (MAX_EPOCHS_SAID - len(epochs))
        return [float(chief), 0.0, float(task_id), float(unreadable), *epochs, *padding]

    # Killed between the chief's backup write and worker 1's: the chief's newest is the run's.
    assert agree_on_epoch([row(1, 0, [4, 3]), row(0, 1, [3, 2])]) == ([4, 3], 3, [], False)
    assert agree_on_epoch([row(1, 0, [3, 2]), row(0, 1, [4, 3])]) == ([3, 2], 3, [], False)
    # A fresh run; a chief whose backups are all unreadable; a worker that can read none of the chief's.
    assert agree_on_epoch([row(1, 0, []), row(0, 1, [2, 1])]) == ([], None, [], False)
    assert agree_on_epoch([row(1, 0, [], unreadable=2), row(0, 1, [])]) == ([], None, [], True)
    three = [row(1, 0, [2, 1]), row(0, 1, []), row(0, 2, [2, 1])]
    assert agree_on_epoch(three) == ([2, 1], None, ["worker 1"], False)
