"""The package as pip installs it: a real wheel, installed outside the repository, with its recipes and
commands (setup.py: package data and console scripts)."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("effnetv2-train", "effnetv2-evaluate", "effnetv2-predict", "effnetv2-export", "effnetv2-summary",
            "effnetv2-convert-weights", "effnetv2-benchmark", "effnetv2-nas")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, bin folder, clean environment): the wheel of this checkout, pip-installed with --target."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"  # a copy: building in the checkout would leave build/ and *.egg-info there
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(os.path.join(REPO, name), source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("efficientnetv2_keras", "hparams"):
        shutil.copytree(os.path.join(REPO, name), source / name, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    # Offline: the venv's setuptools builds it (no isolated build environment to download).
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (work / "dist").glob("efficientnetv2_keras-*.whl")
    site = work / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True,
                   timeout=300)
    # The installed copy only: no checkout on the path (PYTHONPATH first, before the venv's editable install).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL="3")
    return wheel, site, env, work


def _python(code, env, cwd):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_the_wheel_ships_every_recipe_and_a_command_per_tool(installed):
    wheel, _, _, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    recipes = sorted(f for f in os.listdir(os.path.join(REPO, "hparams")) if f.endswith(".yaml"))
    assert sorted(os.path.basename(n) for n in names if n.startswith("efficientnetv2_keras/recipes/")) == recipes
    for command in COMMANDS:
        assert f"{command} = efficientnetv2_keras.cli." in entry_points


def test_recipes_load_by_name_and_path_and_a_command_runs_from_the_installed_package(installed):
    _, site, env, work = installed
    code = (
        "import efficientnetv2_keras, os\n"
        "from efficientnetv2_keras.hparams import RECIPES_DIR, load_config\n"
        "print(efficientnetv2_keras.__file__)\n"
        "print(load_config('digits_demo').model.name)\n"
        # a path; its `base: finetune_imagenet.yaml` resolves next to it
        "print(load_config(os.path.join(RECIPES_DIR, 'finetune_cifar10.yaml')).data.source)\n"
    )
    run = _python(code, env, cwd=work)
    assert run.returncode == 0, run.stderr[-3000:]
    package_file, model, source = run.stdout.split()
    assert package_file.startswith(str(site)), package_file  # not the checkout
    assert (model, source) == ("efficientnetv2-b0", "cifar10")

    bin_dir = site / "bin"
    listing = subprocess.run([str(bin_dir / "effnetv2-train"), "--list"], capture_output=True, text=True, env=env,
                             cwd=work, timeout=300)
    assert listing.returncode == 0, listing.stderr[-3000:]
    assert f"Recipes in {site / 'efficientnetv2_keras' / 'recipes'}:" in listing.stdout
    assert "imagenet_s" in listing.stdout.split() and "digits_demo" in listing.stdout.split()

    summary = subprocess.run([str(bin_dir / "effnetv2-summary"), "--variants=b0"], capture_output=True, text=True,
                             env=env, cwd=work, timeout=300)
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert "| efficientnetv2-b0 | 7,200,312 |" in summary.stdout
