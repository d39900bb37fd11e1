"""What the reward measures besides accuracy: training step time, parameters, FLOPs.

Step time (paper §3.3: "normalized training step time", measured on the accelerator in use): the
recipe's model, compiled by the recipe's own code (optimizer, loss, weight decay), runs `warmup`
train steps (tracing, allocation) and then `steps` timed ones on one fixed batch; the median is the
step time. On CPU the clock is the process CPU time (user + sys of all threads), which a machine
shared with other jobs inflates far less than wall time; on an accelerator it is the wall time of a
step whose result has been fetched (so the device has finished it).
"""

import statistics
import time

import numpy as np

CLOCKS = ("auto", "process", "wall")


def has_accelerator():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))


def resolve_clock(clock="auto"):
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}.")
    if clock == "auto":
        return "wall" if has_accelerator() else "process"
    return clock


def training_image_size(config):
    """The image size training ends at: the last progressive stage's, else the static train size."""
    from efficientnetv2_keras.models.family import get_model_spec
    from efficientnetv2_keras.training.recipe import image_sizes

    if config.progressive.enabled:
        sizes = config.progressive.image_size
        if sizes is None:
            return int(get_model_spec(config.model.name).train_size)
        return int(max(sizes) if isinstance(sizes, (list, tuple)) else sizes)
    return image_sizes(config)[0]


def measure_train_step(config, num_classes, *, image_size=None, steps=5, warmup=2, clock="auto",
                       count_flops=False, seed=0):
    """Times the recipe's training step for its model (`config.model.name`).

    Returns {"step_time": median seconds, "step_times": each timed step, "clock", "image_size",
    "batch_size", "params", "flops" (None unless count_flops)}. `params` is the parameter count of the
    model the trainer builds for this recipe and class count.
    """
    import keras

    from efficientnetv2_keras.models import count_flops as flops_of
    from efficientnetv2_keras.training.recipe import build_model_from_config, compile_from_config
    from efficientnetv2_keras.training.strategy import configure_mixed_precision, resolve_mixed_precision

    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}.")
    clock = resolve_clock(clock)
    size = int(image_size or training_image_size(config))
    batch = int(config.train.batch_size)
    keras.utils.set_random_seed(seed)
    configure_mixed_precision(resolve_mixed_precision(config.train.mixed_precision, None))
    channels_first = keras.config.image_data_format() == "channels_first"
    shape = (3, size, size) if channels_first else (size, size, 3)
    model = build_model_from_config(config, num_classes=num_classes, input_shape=shape, load_checkpoint=False)
    compile_from_config(model, config, steps_per_epoch=100, total_steps=100 * config.train.epochs,
                        num_classes=num_classes)
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch,) + shape).astype("float32")
    labels = rng.integers(0, num_classes, batch)
    if config.data.label_format != "sparse":
        labels = np.eye(num_classes, dtype="float32")[labels]
    for _ in range(warmup):
        model.train_on_batch(images, labels)
    read = time.process_time if clock == "process" else time.perf_counter
    times = []
    for _ in range(steps):
        start = read()
        model.train_on_batch(images, labels)  # returns host values: the step has finished
        times.append(read() - start)
    result = {
        "step_time": statistics.median(times),
        "step_times": times,
        "clock": clock,
        "image_size": size,
        "batch_size": batch,
        "params": int(model.count_params()),
        "flops": int(flops_of(model)) if count_flops else None,
    }
    del model
    keras.backend.clear_session()
    return result
