"""Training-aware architecture search (source checkout): the same as `effnetv2-nas`, see
efficientnetv2_keras/cli/nas.py and docs/nas.md."""

from efficientnetv2_keras.cli.nas import run

if __name__ == "__main__":
    run()
