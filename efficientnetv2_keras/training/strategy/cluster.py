"""MultiWorkerMirroredStrategy over the TF_CONFIG cluster, after the workers have met in Python (where a
missing peer is a clear error after runtime.worker_timeout, not a silent wait in TensorFlow's C++)."""

import json
import os
import socket
import time

import tensorflow as tf

from efficientnetv2_keras.training.strategy.errors import ClusterError

DEFAULT_WORKER_TIMEOUT = 600.0

def _cluster_from_tf_config():
    """(cluster dict, task type, task index) from TF_CONFIG, or a ValueError saying what is wrong."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError(
            "strategy 'multi_worker' needs the TF_CONFIG environment variable on every worker, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}} '
            "(index 1 on the second host); see the README, 'Training on several machines'."
        )
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        return cluster, task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not a cluster description ({type(error).__name__}: {error}): {text!r}") from None

def _peers(cluster, task_type, task_index):
    return [(kind, index, address) for kind, addresses in cluster.items() if kind in ("chief", "worker")
            for index, address in enumerate(addresses) if (kind, index) != (task_type, task_index)]

def _split_address(address):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)

def wait_for_workers(cluster, task_type, task_index, timeout=DEFAULT_WORKER_TIMEOUT, poll=0.5):
    """Waits until every other chief/worker of `cluster` is listening; a RuntimeError after `timeout` s.

    TensorFlow's own start-up blocks in C++ until every task has registered, for ever and deaf to
    SIGTERM (its preemption notifier takes the signal). So the tasks first meet here, in Python: each
    listens on its own address (the port TensorFlow then takes over) and connects to the others'.
    SIGTERM and Ctrl-C end the wait at once.
    """
    own = cluster.get(task_type, [None] * (task_index + 1))[task_index]
    listener = None
    if own:
        listener = socket.socket(socket.AF_INET6 if ":" in _split_address(own)[0] else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("", _split_address(own)[1]))
        except OSError as error:
            listener.close()
            raise ClusterError(
                f"multi_worker: cannot listen on this task's address {own} ({task_type} {task_index} in "
                f"TF_CONFIG): {error}. Is another process using the port, or is the task index wrong?"
            ) from None
        listener.listen(16)
        listener.settimeout(poll)
    deadline = time.monotonic() + timeout
    waiting = _peers(cluster, task_type, task_index)
    try:
        while waiting:
            still = []
            for kind, index, address in waiting:
                try:
                    socket.create_connection(_split_address(address), timeout=min(poll, 2.0)).close()
                except OSError:
                    still.append((kind, index, address))
            waiting = still
            if not waiting:
                break
            if time.monotonic() > deadline:
                names = ", ".join(f"{kind} {index} at {address}" for kind, index, address in waiting)
                raise ClusterError(
                    f"multi_worker: {names} did not come up within {timeout:g} s (runtime.worker_timeout). "
                    "Start every task listed in TF_CONFIG (the same command, each with its own task index), "
                    "check the addresses and that their ports are reachable from here, or raise "
                    "runtime.worker_timeout."
                )
            if listener is not None:  # answer the others while waiting (and pace the loop)
                try:
                    listener.accept()[0].close()
                except OSError:
                    pass
            else:
                time.sleep(poll)
    finally:
        if listener is not None:
            listener.close()

def multi_worker_strategy(timeout=DEFAULT_WORKER_TIMEOUT):
    """MultiWorkerMirroredStrategy over the TF_CONFIG cluster, once every peer is reachable.

    Call it first thing (before any other TensorFlow call): collectives must be configured before
    TensorFlow initializes. Raises ValueError for a missing/malformed TF_CONFIG and RuntimeError when a
    peer is not up within `timeout` seconds. Afterwards SIGTERM ends the process (TensorFlow's
    preemption notifier would otherwise swallow it); the epoch backups make that safe.
    """
    import signal

    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    cluster, task_type, task_index = _cluster_from_tf_config()
    wait_for_workers(cluster, task_type, task_index, timeout)
    cluster_spec = tf.train.ClusterSpec(cluster)
    if task_type in ("chief", "worker") and context.context().coordination_service is None:
        from tensorflow.python.distribute.collective_all_reduce_strategy import coordination_config_pb2

        # What MultiWorkerMirroredStrategy configures itself, plus a registration timeout: a peer that
        # dies between the meeting above and TensorFlow's start-up then fails this task too.
        context.context().configure_coordination_service(
            service_type="standalone",
            service_leader=multi_worker_util.coordination_leader(cluster_spec),
            cluster_register_timeout_in_ms=int(timeout * 1000),
            coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster_spec.num_tasks(job))
                              for job in ("chief", "worker") if job in cluster_spec.jobs],
        )
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread: leave signals alone
        pass
    return strategy

def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
