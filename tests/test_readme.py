"""Every code sample of README.md and of the docs/ pages is run here, or skipped for a stated reason.

The python and bash blocks are extracted from README.md, then docs/*.md in name order. Each must match a rule below (a phrase only it
contains): a new sample without a rule fails `test_every_sample_has_a_rule`. Samples that need a network
dataset run on the bundled digits through the substitutions given with them; commands run as
`python -m efficientnetv2_keras.cli.<tool>`, which is what each `effnetv2-<tool>` console script calls.
The cheap samples run in `make test`, the ones that train or export in `make test-all` (slow).
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

FAST, SLOW = "fast", "slow"

# Python samples: phrase -> (FAST | SLOW, {old: new} substitutions) or ("skip", reason).
PYTHON = {
    "model = EfficientNetV2S(classes=1000)": (FAST, {}),
    "ev2.EfficientNetV2S(weights=None, classes=10)": (FAST, {}),
    "ev2.set_regularization(model, dropout_rate=0.3": (SLOW, {
        # The keras.applications file is a download: the model it comes from instead (the same weights).
        '"efficientnetv2-s.h5"': "__import__('keras').applications.EfficientNetV2S(weights=None)",
    }),
    'classes=21843)': ("skip", "needs checkpoints converted from timm (a download); conversion and loading are "
                               "tested in tests/test_weights_timm.py"),
    "ProgressiveLearning(schedule, lambda stage: build_dataset(": (SLOW, {
        'get_source("cifar10")': 'get_source("digits", image_size=40)',  # no network dataset here
        "total_epochs=350, num_stages=4)": "total_epochs=2, num_stages=2, image_size=(32, 40))",
        "stage.image_size, 128,": "stage.image_size, 32,",
        "cutmix_alpha=stage.cutmix_alpha))": "cutmix_alpha=stage.cutmix_alpha).take(4))",
        "ev2.EfficientNetV2S(": "ev2.EfficientNetV2B0(",
    }),
    'train = build_dataset("digits", "train", 64, 32': (FAST, {}),
    'build_model("runs/nas/best_model.yaml"': ("skip", "the search's output; a sampled table file is built and trained "
                                                       "in tests/test_nas.py"),
}

# Shell commands (continuation lines joined, comments dropped), by how they start: prefix -> (FAST | SLOW, {}) or
# ("skip", reason).
PIP = "installs packages; the wheel, its recipes and commands are tested in tests/test_packaging.py"
COMMANDS = {
    "make demo": ("skip", "trains for minutes; tools/train.py on the digits is tested in tests/test_trainer.py"),
    "make test": ("skip", "the test suite itself"),
    "pip install": ("skip", PIP),
    "pip wheel": ("skip", PIP),
    "effnetv2-train --hparams=digits_demo --model_dir=runs/trial": (SLOW, {}),
    "effnetv2-evaluate --model_dir=runs/trial": (SLOW, {}),
    "effnetv2-predict --model_dir=runs/trial digit.png": (SLOW, {}),
    "effnetv2-export --model=runs/trial/best.keras": (SLOW, {}),
    "effnetv2-train --hparams=imagenet_s": ("skip", "needs ImageNet prepared for tensorflow-datasets and GPUs"),
    "effnetv2-train --hparams=finetune_cifar10": ("skip", "needs CIFAR-10 prepared (tfds build cifar10); the quick "
                                                          "start runs the same command on the digits"),
    "effnetv2-train --hparams=my_recipe.yaml": ("skip", "a recipe file of the reader's own"),
    "effnetv2-train --hparams=finetune_folder": ("skip", "the reader's own image folder; the same command on a "
                                                        "generated folder runs in tests/test_finetune_folder.py"),
    "effnetv2-evaluate --model_dir=runs/s": ("skip", "the run of the ImageNet recipe above"),
    "effnetv2-predict --model_dir=runs/s": ("skip", "the run of the ImageNet recipe above"),
    "effnetv2-convert-weights --list": (SLOW, {}),
    "effnetv2-convert-weights --source=": ("skip", "downloads a checkpoint or needs one downloaded by hand; the "
                                                   "conversion is tested in tests/test_weights_timm.py"),
    # The demo's checkpoint: the trial run's (same recipe, fewer epochs) stands in for it.
    "effnetv2-export --model=runs/demo/best.keras --format=saved_model": (SLOW, {"runs/demo": "runs/trial"}),
    # The trial model (20 steps) is barely trained: its near-flat outputs agreed only 69 % in top-1 after int8
    # quantization, so the parity floor is lowered for it (the demo's own checkpoint: 98.4 %, README).
    "effnetv2-export --model=runs/demo/best.keras --format=tflite --quantization=int8": (
        SLOW, {"runs/demo": "runs/trial", "--quantization=int8": "--quantization=int8 --min_top1_agreement=0.5"}),
    "effnetv2-export --model=runs/demo/best.keras --format=onnx": (SLOW, {"runs/demo": "runs/trial"}),
    "TF_CONFIG=": ("skip", "needs a second worker process; two workers on 127.0.0.1, the timeout and SIGTERM are "
                           "tested in tests/test_multi_worker.py"),
    "effnetv2-nas": ("skip", "a search takes about 6 minutes; sampling, reward, resume, a sampled table trained by "
                             "tools/train.py and the command itself are tested in tests/test_nas.py (the real proxy "
                             "search, also on an image folder, in the slow suite)"),
    "effnetv2-train --hparams=runs/nas/best_recipe.yaml": ("skip", "the search's output; a sampled table trains "
                                                                   "through tools/train.py in tests/test_nas.py"),
    "effnetv2-train --hparams=runs/nas_mine/best_recipe.yaml": ("skip", "the output of a search of the reader's "
                                                                        "own image folder"),
}
CLI_MODULES = {"effnetv2-train": "train", "effnetv2-evaluate": "evaluate", "effnetv2-predict": "predict",
               "effnetv2-export": "export", "effnetv2-summary": "summary",
               "effnetv2-convert-weights": "convert_weights", "effnetv2-benchmark": "benchmark",
               "effnetv2-nas": "nas"}


PAGES = ["README.md"] + sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(REPO, "docs"))
                              if name.endswith(".md"))


def _blocks(language):
    blocks = []
    for page in PAGES:
        with open(os.path.join(REPO, page), encoding="utf-8") as f:
            blocks += [body for lang, body in FENCE.findall(f.read()) if lang == language]
    return blocks


def _commands():
    commands = []
    for body in _blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


def _rule(rules, text):
    matches = [phrase for phrase in rules if (text.startswith(phrase) if rules is COMMANDS else phrase in text)]
    assert len(matches) == 1, f"README sample needs exactly one rule in tests/test_readme.py, has {matches}:\n{text}"
    return rules[matches[0]]


def _substitute(text, substitutions):
    for old, new in substitutions.items():
        assert old in text, f"substitution {old!r} no longer matches the README sample:\n{text}"
        text = text.replace(old, new)
    return text


def test_every_sample_has_a_rule():
    for body in _blocks("python"):
        _rule(PYTHON, body)
    for command in _commands():
        _rule(COMMANDS, command)
    for phrase in PYTHON:
        assert any(phrase in body for body in _blocks("python")), f"stale rule {phrase!r}"
    for phrase in COMMANDS:
        assert any(phrase in command for command in _commands()), f"stale rule {phrase!r}"


def _python_samples(speed):
    return [pytest.param(body, id=body.splitlines()[0][:40]) for body in _blocks("python")
            if _rule(PYTHON, body)[0] == speed]


def _run_python(body, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # samples may write files (BackupAndRestore("backup"))
    code = _substitute(body, _rule(PYTHON, body)[1])
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})  # noqa: S102 - the README's own code


@pytest.mark.parametrize("body", _python_samples(FAST))
def test_python_sample(body, tmp_path, monkeypatch):
    _run_python(body, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("body", _python_samples(SLOW))
def test_python_sample_that_trains_or_builds_several_models(body, tmp_path, monkeypatch):
    _run_python(body, tmp_path, monkeypatch)


def test_the_printed_schedule_is_what_the_library_prints():
    from efficientnetv2_keras.progressive import progressive_schedule

    table = progressive_schedule("s", "paper", 350, 4).table().splitlines()[1:]  # without the title line
    shown = [body.rstrip("\n").splitlines() for body in _blocks("")]
    assert table in shown


@pytest.mark.slow
@pytest.mark.timeout(2400)  # a training run and five commands, each starting TensorFlow
def test_commands_in_order(tmp_path):
    """The quick start (trial run, evaluate, predict, export) and the export and weights commands, in
    README order, in one scratch folder."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = load_digits().images[0] * (255 / 16)  # the predict sample's digit.png
    Image.fromarray(pixels.astype(np.uint8)).resize((48, 48), Image.BICUBIC).convert("RGB").save(tmp_path / "digit.png")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ran = []
    for command in _commands():
        rule = _rule(COMMANDS, command)
        if rule[0] == "skip":
            continue
        if "--format=onnx" in command and not all(
                __import__("importlib").util.find_spec(m) for m in ("tf2onnx", "onnxruntime")):
            continue  # the onnx extra is not installed here
        words = shlex.split(_substitute(command, rule[1]))
        argv = [sys.executable, "-m", f"efficientnetv2_keras.cli.{CLI_MODULES[words[0]]}", *words[1:]]
        run = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
        assert run.returncode == 0, f"{command}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        ran.append((words[0], run.stdout))
    assert [name for name, _ in ran][:4] == ["effnetv2-train", "effnetv2-evaluate", "effnetv2-predict", "effnetv2-export"]
    train_output = ran[0][1]
    assert "Checkpoints in runs/trial: last.keras" in train_output and "validated at epochs 1, 2." in train_output
    assert "digit.png: " in ran[2][1]
    assert (tmp_path / "exports" / "trial.tflite").exists()
