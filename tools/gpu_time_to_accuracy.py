"""Time to accuracy on one GPU: fixed-size training against progressive learning, on Fashion-MNIST.

EfficientNetV2-B0 (--model=s: V2-S) from scratch on Fashion-MNIST (60,000 train / 10,000 test, 28x28 gray)
upsampled to paper-like sizes, twice: "fixed" at 224 px, batch 128; "progressive" the paper's Algorithm 1
(`progressive_schedule`, preset "paper": 4 stages 128 -> 224 px, head dropout 0.1 -> 0.2) with batch scaling
(each stage's batch keeps the last stage's activation memory) and Adam's square-root scaling rule. Both
train on as many images, in mixed bfloat16, Adam with warmup and cosine decay over the images seen. The
minival (held out of the training split, fixed seed) is evaluated after every epoch at the last size, the
test split at the end. Writes <run>.json per run to --out, then table.md and time_to_accuracy.png over
every run there (tools/time_to_accuracy_report.py).

    KERAS_BACKEND=jax python tools/gpu_time_to_accuracy.py --data_dir=fmnist --out=runs/gpu_tta
    KERAS_BACKEND=jax python tools/gpu_time_to_accuracy.py --data_dir=fmnist --dry_run   # the plans only
    KERAS_BACKEND=jax python tools/gpu_time_to_accuracy.py --tiny --out=/tmp/tta       # CPU smoke run

Wall time counts the training steps, until the device has finished each epoch; compilation and evaluation
are timed apart. Keras compiles the train step once per input shape; each stage has one (image size, batch)
(no partial batches), the evaluation one (its last batch padded). --warmup (default) runs each shape once
before the clock starts, then restores the initial weights and optimizer state; --compile_cache=DIR (JAX)
keeps compiled programs on disk for a later command.

No TensorFlow on the path (JAX or PyTorch, Keras, NumPy, matplotlib). `ProgressiveLearning` builds tf.data
pipelines, so the stages are laid out here as it lays them out with steps_per_epoch=N: fit runs epochs of
N steps and a batch's stage follows from its position (epoch = step // N), so a batch loaded ahead still
belongs to its own stage. Images stay uint8 28x28 on the host (random crop of the 2-px-padded image,
horizontal flip) and are upsampled on the device. Per-stage learning rate, betas and epsilon: the
package's square-root rule (`training.schedules.ProgressLR`, `training.optimizers.Adam`); per-stage head
dropout: `set_regularization` at each epoch's start. Data: `keras.datasets.fashion_mnist.load_data()` from
$KERAS_HOME/datasets/fashion-mnist/ or from --data_dir (the four idx .gz files); nothing is downloaded.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from time_to_accuracy_report import RUN_NAMES, report  # noqa: E402

# What keras.datasets.fashion_mnist.load_data() reads from its cache folder.
FASHION_MNIST_FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz")
CROP_PADDING = 2  # zero pixels around a 28x28 image before its random 28x28 crop
MINIVAL_SEED = 0  # the minival is the same images whatever --seed
FULL = {"model": "b0", "sizes": "128,224", "num_stages": 4, "epochs": 15, "batch": 128, "minival": 5000,
        "train_examples": None, "test_examples": None, "eval_batch": 250}
TINY = {"model": "b0", "sizes": "32,48", "num_stages": 2, "epochs": 4, "batch": 32, "minival": 128,
        "train_examples": 512, "test_examples": 64, "eval_batch": 64}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--out", default="runs/gpu_time_to_accuracy", help="Folder for the JSONs, the table and the plot.")
    add("--data_dir", help="Folder of the four Fashion-MNIST idx .gz files (default: Keras' cache, "
        "$KERAS_HOME/datasets/fashion-mnist).")
    add("--runs", default="fixed,progressive", help="fixed, progressive or both, comma-separated.")
    add("--tiny", action="store_true", help=f"CPU smoke-run defaults: {TINY}")
    add("--model", help="Variant build_model takes: b0 (default), s, ...")
    add("--sizes", help="First,last image size of the progressive run; the fixed run trains at the last.")
    add("--num_stages", type=int, help="Progressive stages (paper: 4).")
    add("--epochs", type=int, help="Epochs of the fixed run; the progressive run trains on as many images.")
    add("--batch", type=int, help="Batch at the last size (the fixed run's batch).")
    add("--max_batch_size", type=int, help="Cap on a scaled stage batch (memory).")
    add("--lr", type=float, default=2e-3, help="Adam's peak learning rate at --batch.")
    add("--minival", type=int, help="Training images held out as the minival.")
    add("--train_examples", type=int, help="Training images used (default: all the others).")
    add("--test_examples", type=int, help="Test images evaluated (default: all).")
    add("--eval_batch", type=int, help="Evaluation batch.")
    add("--precision", default="mixed_bfloat16", help="Keras dtype policy.")
    add("--budget_s", type=float, default=240.0, help="Training seconds per run after which no epoch starts.")
    add("--warmup", action=argparse.BooleanOptionalAction, default=True,
        help="Compile every shape before the clock starts (default); --no-warmup times compilation in.")
    add("--compile_cache", help="JAX: folder for compiled programs, reused by later commands.")
    add("--seed", type=int, default=0, help="Weights, data order and augmentation.")
    add("--dry_run", action="store_true", help="Read the data and print both plans; train nothing.")
    args = parser.parse_args(argv)
    for name, value in (TINY if args.tiny else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.sizes = [int(size) for size in args.sizes.split(",")]
    args.runs = [run.strip() for run in args.runs.split(",") if run.strip()]
    if not args.runs or set(args.runs) - set(RUN_NAMES):
        parser.error(f"--runs takes fixed, progressive or both, comma-separated; got {','.join(args.runs)!r}.")
    if len(args.sizes) != 2 or args.sizes[0] > args.sizes[1]:
        parser.error(f"--sizes takes the first and the last image size, first <= last; got {args.sizes}.")
    return args


# -- data ----------------------------------------------------------------------------------------------


def data_folder(data_dir):
    """The folder Keras will read. With `data_dir`, Keras' home becomes a temporary folder whose
    datasets/fashion-mnist is `data_dir` (Keras reads KERAS_HOME once, when it is imported)."""
    if data_dir is None:
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
        return os.path.join(home, "datasets", "fashion-mnist")
    if "keras" in sys.modules:
        raise RuntimeError("--data_dir must be given before Keras is imported: run this script as a command, or "
                           "set KERAS_HOME so that $KERAS_HOME/datasets/fashion-mnist holds the files.")
    home = tempfile.mkdtemp(prefix="keras_home_")
    os.makedirs(os.path.join(home, "datasets"))
    os.symlink(os.path.abspath(data_dir), os.path.join(home, "datasets", "fashion-mnist"))
    os.environ["KERAS_HOME"] = home
    return data_dir


def load_splits(args):
    """{"train", "minival", "test"}: (uint8 images [N, 28, 28], int32 labels [N]). The minival is a seeded
    random part of the training split, the training images (the first --train_examples of) the rest."""
    folder = data_folder(args.data_dir)
    missing = [name for name in FASHION_MNIST_FILES if not os.path.exists(os.path.join(folder, name))]
    if missing:
        raise SystemExit(
            f"Fashion-MNIST is not in {folder} (missing: {', '.join(missing)}). This script downloads nothing: "
            "copy the four idx .gz files there (Debian: `apt-get install dataset-fashion-mnist` installs them in "
            "/usr/share/datasets/fashion-mnist; `make data` copies them into Keras' cache), or pass "
            "--data_dir=FOLDER holding them.")
    import keras

    (train_images, train_labels), (test_images, test_labels) = keras.datasets.fashion_mnist.load_data()
    order = np.random.default_rng(MINIVAL_SEED).permutation(len(train_images))
    held, rest = order[:args.minival], order[args.minival:][:args.train_examples]
    splits = {"train": (train_images[rest], train_labels[rest]), "minival": (train_images[held], train_labels[held]),
              "test": (test_images[:args.test_examples], test_labels[:args.test_examples])}
    for name, (images, _) in splits.items():
        if len(images) < (args.batch if name == "train" else 1):
            raise SystemExit(f"The {name} split has {len(images)} images, fewer than one batch: lower --minival or "
                             "--batch, or raise --train_examples / --test_examples.")
    return {name: (images, labels.astype("int32")) for name, (images, labels) in splits.items()}


def crop_and_flip(images, rng):
    """Each 28x28 image: a random 28x28 crop of it padded by CROP_PADDING zeros, mirrored with probability 1/2."""
    count, height, width = images.shape
    padded = np.pad(images, ((0, 0), (CROP_PADDING, CROP_PADDING), (CROP_PADDING, CROP_PADDING)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (height, width), axis=(1, 2))
    rows, columns = rng.integers(0, 2 * CROP_PADDING + 1, (2, count))
    crops = windows[np.arange(count), rows, columns]  # a copy: [count, height, width]
    mirrored = rng.random(count) < 0.5
    crops[mirrored] = crops[mirrored, :, ::-1]
    return crops


def model_input(images, size):
    """uint8 [N, 28, 28] -> float32 [N, size, size, 3] in [0, 255], upsampled (bilinear) on the device."""
    from keras import ops

    images = ops.cast(ops.convert_to_tensor(images[..., None]), "float32")
    return ops.repeat(ops.image.resize(images, (size, size), interpolation="bilinear"), 3, axis=-1)


class Stream:
    """Training batches by position: fit epoch e (steps e*N .. e*N + N - 1) trains at `epoch_shapes[e]`
    (image size, batch). The images are read in order from an endless sequence of seeded permutations of
    the split: each is seen once per pass, whatever the stage batches."""

    def __init__(self, images, labels, epoch_shapes, steps_per_epoch, seed):
        self.images, self.labels, self.seed = images, labels, seed
        self.epoch_shapes, self.steps_per_epoch = list(epoch_shapes), steps_per_epoch
        self.shapes = [shape for shape in epoch_shapes for _ in range(steps_per_epoch)]
        self.offsets = np.concatenate([[0], np.cumsum([batch for _, batch in self.shapes])[:-1]])
        self._permutations = {}

    def __len__(self):
        return len(self.shapes)

    def passes(self, steps=None):
        """Passes over the split that the first `steps` steps (default: all) cover."""
        return sum(batch for _, batch in self.shapes[:steps]) / len(self.images)

    def _indices(self, step):
        positions = self.offsets[step] + np.arange(self.shapes[step][1])
        passes, within = np.divmod(positions, len(self.images))
        indices = np.empty_like(positions)
        for number in np.unique(passes):  # one pass, or the end of one and the start of the next
            if number not in self._permutations:
                self._permutations[number] = np.random.default_rng([self.seed, number]).permutation(len(self.images))
            indices[passes == number] = self._permutations[number][within[passes == number]]
        return indices

    def batch(self, step):
        indices = self._indices(step)
        images = crop_and_flip(self.images[indices], np.random.default_rng([self.seed, len(self) + step]))
        return model_input(images, self.shapes[step][0]), self.labels[indices]

    def batches(self, steps=None):
        """A generator for fit: the batches of `steps` (default: all), in order."""
        return (self.batch(step) for step in (range(len(self)) if steps is None else steps))

    def describe(self):
        """The fit epochs, e.g. "1 x (128 px, batch 392), 2 x (160 px, batch 248)"."""
        runs = []
        for shape in self.epoch_shapes:
            if runs and runs[-1][1] == shape:
                runs[-1][0] += 1
            else:
                runs.append([1, shape])
        return ", ".join(f"{count} x ({size} px, batch {batch})" for count, (size, batch) in runs)

    def first_steps(self):
        """The first step of every distinct (image size, batch): one per stage shape."""
        firsts = {}
        for step, shape in enumerate(self.shapes):
            firsts.setdefault(shape, step)
        return list(firsts.values())


def accuracy(model, split, size, batch):
    """Top-1 accuracy at `size` px in batches of `batch`, the last one padded (one shape: one compilation)."""
    images, labels = split
    predicted = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk),) + chunk.shape[1:], chunk.dtype)])
        predicted.append(np.argmax(model.predict_on_batch(model_input(padded, size)), axis=-1)[:len(chunk)])
    return float(np.mean(np.concatenate(predicted) == labels))


# -- runs ----------------------------------------------------------------------------------------------


def plan_run(run, args, spec, splits):
    """(Stream, learning-rate schedule, progressive schedule or None) of a run."""
    from efficientnetv2_keras.progressive.schedule import progressive_schedule
    from efficientnetv2_keras.training.schedules import ProgressLR, TrainingProgress, cosine_decay_with_warmup

    steps_per_epoch = len(splits["train"][0]) // args.batch
    if run == "fixed":
        shapes, stages = [(args.sizes[1], args.batch)] * args.epochs, None
        learning_rate = cosine_decay_with_warmup(args.lr, args.epochs * steps_per_epoch, steps_per_epoch)
    else:
        stages = progressive_schedule(
            spec, "paper", total_epochs=args.epochs, num_stages=args.num_stages, batch_size=args.batch,
            batch_scaling=True, max_batch_size=args.max_batch_size, lr_scaling="sqrt", image_size=tuple(args.sizes),
            randaug_magnitude=None, mixup_alpha=None, cutmix_alpha=None)  # augmentation: crop and flip alone
        progress = TrainingProgress.from_schedule(stages, steps_per_epoch)
        # Warmup and decay over images seen, in steps of the base batch (as the recipes' ProgressLR).
        base = cosine_decay_with_warmup(args.lr, max(1, round(progress.total_base_steps)), steps_per_epoch)
        learning_rate = ProgressLR(base, progress.steps, progress.ratios, progress.lr_scales, rule=progress.rule)
        shapes = [(stage.image_size, stage.batch_size) for stage in stages.stages
                  for _ in range(max(1, round((stage.end - stage.start) / stage.batch_ratio)))]  # one shape per epoch
    return Stream(*splits["train"], shapes, steps_per_epoch, args.seed), learning_rate, stages


def build_classifier(spec, learning_rate, seed):
    import keras

    from efficientnetv2_keras.models import build_model
    from efficientnetv2_keras.training.optimizers import Adam

    # keras.utils.set_random_seed also seeds TensorFlow where it is installed, importing it: blocked for the
    # call (Keras then takes it as absent), as nothing here uses it.
    blocked = "tensorflow" not in sys.modules
    sys.modules.setdefault("tensorflow", None)
    try:
        keras.utils.set_random_seed(seed)  # both runs start from the same weights
    finally:
        if blocked:
            del sys.modules["tensorflow"]
    model = build_model(spec, weights=None, input_shape=(None, None, 3), classes=10)
    model.compile(optimizer=Adam(learning_rate), loss=keras.losses.SparseCategoricalCrossentropy())
    model.optimizer.build(model.trainable_variables)
    return model


class EpochClock:
    """Per fit epoch: training seconds until the device is done, then the minival accuracy (timed apart);
    no epoch starts once `budget_s` seconds of training have passed."""

    def __init__(self, model, evaluate, stream, budget_s):
        self.model, self.evaluate, self.stream, self.budget_s = model, evaluate, stream, budget_s
        self.train_seconds = self.eval_seconds = 0.0
        self.records = []

    def start(self, epoch, logs=None):
        self.started = time.perf_counter()

    def stop(self, epoch, logs=None):
        import keras

        keras.ops.convert_to_numpy(self.model.trainable_variables[0])  # waits for the epoch's last step
        self.train_seconds += time.perf_counter() - self.started
        evaluated = time.perf_counter()
        minival = self.evaluate(self.model)
        self.eval_seconds += time.perf_counter() - evaluated
        size, batch = self.stream.epoch_shapes[epoch]
        self.records.append({"epoch": epoch + 1, "image_size": size, "batch_size": batch, "train_s": self.train_seconds,
                             "minival_accuracy": minival, "loss": (logs or {}).get("loss")})
        print(f"  epoch {epoch + 1:3d}: {size} px, batch {batch}, minival {minival:.4f}, "
              f"{self.train_seconds:7.1f} s of training", flush=True)
        if self.train_seconds >= self.budget_s:
            self.model.stop_training = True


def warm_up(model, stream, evaluate):
    """One train step of every stage shape through fit, and the evaluation, so that each compiles before
    the clock starts; then the initial weights and optimizer state are put back. Returns its seconds."""
    import keras

    started = time.perf_counter()
    variables = list(model.variables) + list(model.optimizer.variables)
    initial = [keras.ops.convert_to_numpy(variable) for variable in variables]
    steps = stream.first_steps()
    model.fit(stream.batches(steps), steps_per_epoch=len(steps), epochs=1, shuffle=False, verbose=0)
    evaluate(model)
    for variable, value in zip(variables, initial):
        variable.assign(value)
    return time.perf_counter() - started


def train_run(run, args, splits, spec):
    """Trains one run; returns its record (the JSON written to --out)."""
    import keras

    from efficientnetv2_keras.models.regularization import set_regularization

    stream, learning_rate, stages = plan_run(run, args, spec, splits)
    model = build_classifier(spec, learning_rate, args.seed)
    eval_size, steps_per_epoch = args.sizes[1], stream.steps_per_epoch

    def evaluate(trained, split="minival"):
        return accuracy(trained, splits[split], eval_size, args.eval_batch)

    def set_stage_dropout(epoch, logs=None):  # Algorithm 1's regularization of the epoch's stage
        set_regularization(model, dropout_rate=stages.stage_at(min(epoch, stages.total - 1)).dropout_rate)

    warmup_seconds = warm_up(model, stream, evaluate) if args.warmup else 0.0
    clock = EpochClock(model, evaluate, stream, args.budget_s)
    callbacks = [keras.callbacks.LambdaCallback(on_epoch_begin=clock.start, on_epoch_end=clock.stop)]
    if stages is not None:
        callbacks.insert(0, keras.callbacks.LambdaCallback(on_epoch_begin=set_stage_dropout))
    print(f"{run}: fit epochs of {steps_per_epoch} steps: {stream.describe()}; warm-up (compilation) "
          f"{warmup_seconds:.1f} s", flush=True)
    model.fit(stream.batches(), steps_per_epoch=steps_per_epoch, epochs=len(stream.epoch_shapes), callbacks=callbacks,
              shuffle=False, verbose=0)
    return {"run": run, "model": spec.name, "image_sizes": sorted({size for size, _ in stream.shapes}),
            "batches": sorted({batch for _, batch in stream.shapes}, reverse=True), "fit_epochs": len(clock.records),
            "passes": stream.passes(len(clock.records) * steps_per_epoch), "warmup_s": warmup_seconds,
            "train_s": clock.train_seconds, "eval_s": clock.eval_seconds, "test_accuracy": evaluate(model, "test"),
            "records": clock.records, "eval_size": eval_size, "train_examples": len(stream.images), **environment(args)}


def environment(args):
    import keras

    backend, device = keras.backend.backend(), "cpu"
    if backend == "jax":
        import jax

        device = jax.devices()[0].device_kind
    elif backend == "torch":
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else device
    return {"backend": backend, "device": device, "precision": args.precision}


def main(argv=None, model=None):
    """Runs the benchmark; `model` (a ModelSpec) replaces --model, e.g. a tiny table in tests."""
    os.environ.setdefault("KERAS_BACKEND", "jax")  # read when Keras is imported (load_splits)
    args = parse_args(argv)
    splits = load_splits(args)
    import keras

    from efficientnetv2_keras.files import atomic_write_text
    from efficientnetv2_keras.models.family import get_model_spec

    spec = model or get_model_spec(args.model)
    if args.dry_run:
        print(", ".join(f"{name} {len(images)}" for name, (images, _) in splits.items()) + " images")
        for run in args.runs:
            stream, _, stages = plan_run(run, args, spec, splits)
            print(f"{run}: fit epochs of {stream.steps_per_epoch} steps: {stream.describe()}; "
                  f"{stream.passes():.2f} passes over the training images")
            print(stages.table() if stages else "")
        return
    if args.compile_cache and keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    keras.mixed_precision.set_global_policy(args.precision)
    os.makedirs(args.out, exist_ok=True)
    for run in args.runs:
        result = train_run(run, args, splits, spec)  # an earlier <run>.json stays until this one is complete
        atomic_write_text(os.path.join(args.out, f"{run}.json"), json.dumps(result, indent=1))
        keras.backend.clear_session()
    report(args.out)


if __name__ == "__main__":
    main()
