"""Benchmarks: `make bench` / `python tools/benchmark.py [--sections=models,data,export,progressive]`.

Each section lives in `tools/bench_<section>.py` and defines `run(flags) -> str` (a printed report).
Speed numbers are measured side by side in one run (ratios against keras.applications where one
exists); no test asserts on wall time.
"""

import importlib
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_progressive  # noqa: E402,F401  (defines its flags; runs only when asked: ~40 min)

SECTIONS = ("models", "data", "export", "progressive")
DEFAULT_SECTIONS = ("models", "data", "export")

flags.DEFINE_list("sections", list(DEFAULT_SECTIONS), f"Which sections to run, from {SECTIONS}.")
flags.DEFINE_boolean("quick", False, "Fewer repetitions (for a smoke run).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    unknown = [s for s in FLAGS.sections if s not in SECTIONS]
    if unknown:
        raise app.UsageError(f"Unknown benchmark section(s) {unknown}; choose from {list(SECTIONS)}.")
    for section in FLAGS.sections:
        module = importlib.import_module(f"bench_{section}")
        print(f"\n=== {section} ===", flush=True)
        print(module.run(FLAGS), flush=True)


if __name__ == "__main__":
    app.run(main)
