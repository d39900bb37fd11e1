"""efficientnetv2-keras: EfficientNetV2 (Tan & Le, ICML 2021) for Keras 3, with progressive learning."""

from setuptools import find_packages, setup

setup(
    name="efficientnetv2-keras",
    version="0.1.0",
    description=(
        "EfficientNetV2 B0-B3/S/M/L/XL for Keras 3 (keras.applications-compatible), "
        "progressive learning with adaptive regularization in one model.fit, and export."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # The recipes (hparams/*.yaml) ship inside the package as efficientnetv2_keras/recipes/, so that
    # load_config("imagenet_s") and the commands find them in an installed wheel too.
    packages=find_packages(include=["efficientnetv2_keras", "efficientnetv2_keras.*"]) + ["efficientnetv2_keras.recipes"],
    package_dir={"efficientnetv2_keras.recipes": "hparams"},
    package_data={"efficientnetv2_keras.recipes": ["*.yaml"]},
    entry_points={
        "console_scripts": [
            "effnetv2-train=efficientnetv2_keras.cli.train:run",
            "effnetv2-evaluate=efficientnetv2_keras.cli.evaluate:run",
            "effnetv2-predict=efficientnetv2_keras.cli.predict:run",
            "effnetv2-export=efficientnetv2_keras.cli.export:run",
            "effnetv2-summary=efficientnetv2_keras.cli.summary:run",
            "effnetv2-convert-weights=efficientnetv2_keras.cli.convert_weights:run",
            "effnetv2-benchmark=efficientnetv2_keras.cli.benchmark:run",
            "effnetv2-nas=efficientnetv2_keras.cli.nas:run",
        ],
    },
    python_requires=">=3.11",
    install_requires=[
        # tensorflow-addons is deliberately absent: it is end-of-life and fails to
        # import with Keras 3 ("No module named 'keras.src.engine'").
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "tensorflow-datasets>=4.9.6,<5",
        # tfds needs it for download_and_prepare on Python 3.11 but does not declare it.
        "importlib_resources>=6,<8",
        "absl-py>=2.1,<3",
        "PyYAML>=6,<7",
        "numpy>=1.26,<3",
        "scikit-learn>=1.4,<2",
        "matplotlib>=3.8,<4",
        # TensorFlow 2.21 no longer pulls it in; training writes TensorBoard logs.
        "tensorboard>=2.20,<3",
    ],
    extras_require={
        # nbclient + ipykernel execute the notebooks (make test-all), nbformat validates them (make test);
        # hypothesis drives the property tests of recipes and image folders; pytest-xdist runs the suite
        # as two processes (one per core: a single test keeps about one core busy).
        "test": ["pytest>=8,<10", "pytest-timeout>=2.3,<3", "pytest-xdist>=3.5,<4", "nbformat>=5.10,<6", "nbclient>=0.10,<0.11",
                 "ipykernel>=6.29,<8", "hypothesis>=6.100,<7"],
        # JAX 0.10 is the newest release for Python 3.11 (0.11+ needs 3.12).
        "jax": ["jax>=0.4.34,<0.13"],
        # The TFLite interpreter now ships as LiteRT; conversion stays in TensorFlow.
        "litert": ["ai-edge-litert>=2.0,<3"],
        # Converting timm's tf_efficientnetv2_* checkpoints (efficientnetv2_keras.weights) and the
        # parity tests against timm. Install torch first from a CPU build (`pip install torch==2.13.0`
        # where that file is on disk): a bare `torch` requirement resolves to a multi-GB CUDA build.
        "timm": ["torch>=2.4,<2.14", "timm>=1.0,<2", "safetensors>=0.4,<1"],
        # ONNX export: tf2onnx converts the TensorFlow graph (1.16 pins protobuf 3.20, which
        # TensorFlow 2.21 cannot use); ONNX Runtime runs the parity check.
        "onnx": ["tf2onnx>=1.17,<2", "onnx>=1.17,<2", "onnxruntime>=1.20,<2"],
    },
)
