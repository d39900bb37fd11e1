"""Top-k labels for image files (source checkout): the same as `effnetv2-predict`, see efficientnetv2_keras/cli/predict.py."""

from efficientnetv2_keras.cli.predict import run

if __name__ == "__main__":
    run()
