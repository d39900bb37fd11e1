"""Benchmarks: `effnetv2-benchmark [--sections=models,data,export,progressive,stages] [--quick]` (`make bench` in a checkout).

Each section is a module `efficientnetv2_keras.benchmarks.<section>` with `run(flags) -> str` (a printed
report). Speed numbers are measured side by side in one run (ratios against keras.applications where
one exists); no test asserts on wall time.
"""

import importlib

from absl import app, flags

from efficientnetv2_keras import cli
from efficientnetv2_keras.benchmarks import models, progressive, stages  # noqa: F401  (define their flags; run when asked)

SECTIONS = ("models", "data", "export", "progressive", "stages")
# progressive (about 1 CPU-hour) and stages (a recipe's stages, one at a time) only when asked.
DEFAULT_SECTIONS = ("models", "data", "export")

flags.DEFINE_list("sections", list(DEFAULT_SECTIONS), f"Which sections to run, from {SECTIONS}.")
flags.DEFINE_boolean("quick", False, "Fewer repetitions (for a smoke run).")
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
