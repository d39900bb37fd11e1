"""Exports a model (SavedModel, TFLite, ONNX) with a parity check (source checkout): the same as `effnetv2-export`, see efficientnetv2_keras/cli/export.py."""

from efficientnetv2_keras.cli.export import run

if __name__ == "__main__":
    run()
