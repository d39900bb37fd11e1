"""Converts timm's tf_efficientnetv2_* checkpoints (source checkout): the same as `effnetv2-convert-weights`, see efficientnetv2_keras/cli/convert_weights.py."""

from efficientnetv2_keras.cli.convert_weights import run

if __name__ == "__main__":
    run()
