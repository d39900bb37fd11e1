"""Benchmarks (source checkout): the same as `effnetv2-benchmark`, see efficientnetv2_keras/cli/benchmark.py."""

from efficientnetv2_keras.cli.benchmark import run

if __name__ == "__main__":
    run()
