"""Benchmarks: `effnetv2-benchmark [--sections=models,data,export,progressive,stages] [--quick]` (`make bench` in a checkout).

Each section is a module `efficientnetv2_keras.benchmarks.<section>` with `run(options) -> str` (a printed
report), imported when it runs; its options are the `--<section>_*` flags below. Speed numbers are measured
side by side in one run (ratios against keras.applications where one exists); no test asserts on wall time.
"""

import importlib

from absl import app, flags

from efficientnetv2_keras import cli

SECTIONS = ("models", "data", "export", "progressive", "stages")
# progressive (about 1 CPU-hour) and stages (a recipe's stages, one at a time) only when asked.
DEFAULT_SECTIONS = ("models", "data", "export")

flags.DEFINE_list("sections", list(DEFAULT_SECTIONS), f"Which sections to run, from {SECTIONS}.")
flags.DEFINE_boolean("quick", False, "Fewer repetitions (for a smoke run).")

# -- models (benchmarks/models.py) --
flags.DEFINE_list("models_variants", ["b0", "s"], "Variants compared with keras.applications.")
flags.DEFINE_list("models_sizes", ["128"], "Image sizes (px).")
flags.DEFINE_list("models_batches", ["16"], "Batch sizes.")
flags.DEFINE_integer("models_repeats", 5, "Calls per timed round.")
flags.DEFINE_integer("models_rounds", 5, "Alternating rounds (the median is reported).")
flags.DEFINE_enum("models_optimizer", "sgd", ["sgd", "rmsprop"], "The train step's optimizer (benchmarks/models.py).")
flags.DEFINE_boolean("models_inference", True, "Also time inference (predict_on_batch).")
flags.DEFINE_boolean("models_ops", False, "Also count the ops of each traced train step (TensorFlow).")

# -- progressive (benchmarks/progressive.py) --
flags.DEFINE_integer("progressive_epochs", 24, "Epochs of data per run (the digits_demo recipe: 24).")
flags.DEFINE_integer("progressive_seeds", 3, "Seeds per configuration (0: the per-stage step throughput only).")
flags.DEFINE_list("progressive_runs", ["fixed", "progressive", "batch"], "Which configurations.")
flags.DEFINE_integer("progressive_validation_freq", 2, "Validate on the minival every N epochs of data (curve points).")
flags.DEFINE_string("progressive_out", "bench_progressive", "Where the plot and the per-run results go.")
flags.DEFINE_string("progressive_recipe", "digits_demo", "The recipe every run starts from.")
flags.DEFINE_multi_string("progressive_overrides", [], "Recipe overrides for every run, as --override of effnetv2-train "
                          "(e.g. progressive.image_size=[32,64],data.train_size=64).")
flags.DEFINE_list("progressive_seed_list", None, "Seeds to run (overrides --progressive_seeds; to split the "
                  "benchmark over processes that write one --progressive_out each).")

# -- stages (benchmarks/stages.py) --
flags.DEFINE_string("stages_recipe", "digits_demo", "The recipe whose stages are measured.")
flags.DEFINE_multi_string("stages_overrides", [], "Recipe overrides, as --override of effnetv2-train.")
flags.DEFINE_integer("stages_batch", None, "Base batch size (train.batch_size) for the synthetic step; default: the recipe's.")
flags.DEFINE_integer("stages_steps", 8, "Timed train steps (and pipeline batches) per stage and round.")
flags.DEFINE_integer("stages_rounds", 3, "Alternating rounds over the stages (medians are reported).")
flags.DEFINE_string("stages_run", None, "A finished run of the same recipe (effnetv2-train --model_dir) for the epoch column.")
flags.DEFINE_boolean("stages_pipeline", True, "Measure the input pipelines (needs the recipe's data source).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    unknown = [s for s in FLAGS.sections if s not in SECTIONS]
    if unknown:
        raise app.UsageError(f"Unknown benchmark section(s) {unknown}; choose from {list(SECTIONS)}.")
    for section in FLAGS.sections:
        module = importlib.import_module(f"efficientnetv2_keras.benchmarks.{section}")
        print(f"\n=== {section} ===", flush=True)
        print(module.run(FLAGS), flush=True)
    return 0


def run(sections=None):
    """The command; `sections` changes the default of --sections (tools/bench_<section>.py run one)."""
    if sections is not None:
        FLAGS.set_default("sections", list(sections))
    cli.run(main)


if __name__ == "__main__":
    run()
