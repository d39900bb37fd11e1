"""Input pipeline section of the benchmarks (source checkout): the same as `effnetv2-benchmark --sections=data`, see efficientnetv2_keras/cli/benchmark.py."""

from efficientnetv2_keras.cli.benchmark import run

if __name__ == "__main__":
    run(sections=["data"])
