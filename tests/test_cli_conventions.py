"""What every command does the same way: --help exits 0, TensorFlow's C++ start-up lines stay off the
terminal (unless --verbose), a finished run is reported once, and the package holds no dead code.

Subprocesses: `train --help` and a failing `summary` in the fast suite; the --verbose run is slow-marked.
"""

import ast
import collections
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "efficientnetv2_keras")

# What TensorFlow 2.21 prints on a CPU machine before anything of ours (each seen on this machine).
START_UP_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "cpu_feature_guard",
    "To enable the following instructions",
)


def start_up_lines(stderr):
    return [line for line in stderr.splitlines() if any(text in line for text in START_UP_LINES)]


def command(name, *arguments):
    """`python -m efficientnetv2_keras.cli.<name>` as a user runs it: no TF_CPP_MIN_LOG_LEVEL of ours."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    return subprocess.run([sys.executable, "-m", f"efficientnetv2_keras.cli.{name}", *arguments],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


# -- --help ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "--helpshort", "--helpfull", "-?"])
def test_help_flags_exit_0(flag, capsys):
    """`cmd --help && ...` in a script goes on: exit status 0, the usage on stdout (absl's default is 1)."""
    from absl import flags

    from efficientnetv2_keras import cli

    flags.FLAGS.unparse_flags()
    argv = sys.argv
    sys.argv = ["effnetv2-test", flag]
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.run(lambda argv: pytest.fail("main ran"))
    finally:
        sys.argv = argv
        flags.FLAGS.unparse_flags()
    assert exit_info.value.code == 0
    assert "--[no]verbose" in capsys.readouterr().out


def test_a_command_s_help_exits_0_without_tensorflow_start_up_lines():
    run = command("train", "--help")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Trains (and/or evaluates) a recipe." in run.stdout and "--model_dir" in run.stdout
    assert start_up_lines(run.stderr) == [], run.stderr


@pytest.mark.slow  # a TensorFlow start each (~15 s on 2 cores); `train --help` above is the fast one
@pytest.mark.parametrize("tool", ["evaluate", "predict", "export", "summary", "convert_weights", "benchmark", "nas"])
def test_every_command_s_help_exits_0(tool):
    run = command(tool, "--helpfull")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "--[no]verbose" in run.stdout and start_up_lines(run.stderr) == [], run.stderr


# -- TensorFlow's start-up lines ---------------------------------------------------------------------------


def test_a_command_that_runs_tensorflow_shows_its_own_error_and_no_start_up_lines():
    """summary builds B0 (TensorFlow starts, the devices are set up: cuInit fails on a CPU machine) and
    then stops at the unknown variant: stderr is the one error line, nothing before it."""
    run = command("summary", "--variants=b0,b9")
    assert run.returncode == 2, run.stderr[-3000:]
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("summary: error: Unknown") and "'b9'" in lines[0], run.stderr


@pytest.mark.slow  # one more TensorFlow start (~15 s on 2 cores)
def test_verbose_shows_tensorflow_s_start_up_lines():
    run = command("summary", "--variants=b0", "--verbose")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "efficientnetv2-b0" in run.stdout
    assert re.search(r"^[IWEF]\d{4} ", run.stderr, re.MULTILINE), run.stderr  # TensorFlow's own log lines


def test_start_up_filter_keeps_errors_and_everything_that_is_not_a_tensorflow_log_line():
    from efficientnetv2_keras.cli.tensorflow_logs import lines_to_show

    captured = "\n".join([
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796522831.903206    8200 port.cc:153] oneDNN custom operations are on. You may see ...",
        "I0000 00:00:1796522831.903722    8200 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
        "GPU will not be used.",
        "W0000 00:00:1796522831.903722    8200 some.cc:1] a warning",
        "E0000 00:00:1796522836.135715    8200 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
        "Failed call to cuInit: UNKNOWN ERROR (303)",
        "E0000 00:00:1796522836.135715    8200 other.cc:7] a real error",
        "/path/module.py:3: UserWarning: a Python warning",
        "  warnings.warn(...)",
        "",
    ])
    # The default level (2): errors stay; a failed cuInit where no CUDA driver was found is expected.
    assert lines_to_show(captured, 2) == ("E0000 00:00:1796522836.135715    8200 other.cc:7] a real error\n"
                                          "/path/module.py:3: UserWarning: a Python warning\n"
                                          "  warnings.warn(...)\n")
    with_driver = captured.replace("Could not find cuda drivers", "Found the drivers")
    assert "failed call to cuInit" in lines_to_show(with_driver, 2)  # a driver that fails: an error to see
    assert "a warning" in lines_to_show(captured, 1) and "oneDNN" not in lines_to_show(captured, 1)
    assert lines_to_show(captured, 0) == captured  # TF_CPP_MIN_LOG_LEVEL=0: everything
    assert "a real error" not in lines_to_show(captured, 3) and "UserWarning" in lines_to_show(captured, 3)


def test_verbose_is_read_from_the_command_line_before_flags_are_parsed():
    from efficientnetv2_keras.cli.tensorflow_logs import verbose_requested

    assert verbose_requested(["cmd", "--verbose"]) and verbose_requested(["cmd", "-verbose=true"])
    assert not verbose_requested(["cmd"]) and not verbose_requested(["cmd", "--noverbose"])
    assert not verbose_requested(["cmd", "--verbose", "--verbose=false"])
    assert not verbose_requested(["cmd", "--", "--verbose"])  # after "--": an argument, not a flag


# -- a finished run ----------------------------------------------------------------------------------------


def test_a_finished_run_is_reported_once(tmp_path):
    """A rerun of a finished run says so once on the terminal (not a second time through absl logging)."""
    model_dir = tmp_path / "run"
    (model_dir / "backup").mkdir(parents=True)
    # What a finished 2-epoch run leaves for `RunDir.finished`: its last backup and results.json.
    (model_dir / "backup" / "epoch-0002.weights.h5").write_bytes(b"")
    (model_dir / "results.json").write_text(json.dumps({"model": "efficientnetv2-tiny", "mode": "train",
                                                        "epochs": 2, "precision": "float32", "replicas": 1}))
    overrides = "train.epochs=2,train.batch_size=16,progressive.enabled=false,data.cache=false"
    run = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "train_runner.py"), f"--model_dir={model_dir}",
         f"--override={overrides}", "--mode=train"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert run.returncode == 0, run.stderr[-3000:]
    message = f"{model_dir} holds a finished run (2 of 2 epochs"
    assert (run.stdout + run.stderr).count(message) == 1, run.stdout + run.stderr


# -- dead code ---------------------------------------------------------------------------------------------


def _package_modules():
    for folder, _, names in os.walk(PACKAGE):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as handle:
                    yield path, ast.parse(handle.read())


def test_no_statement_follows_a_return_or_raise():
    unreachable = []
    for path, tree in _package_modules():
        for node in ast.walk(tree):
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None)
                if not isinstance(block, list):
                    continue
                for statement, following in zip(block, block[1:]):
                    if isinstance(statement, (ast.Return, ast.Raise, ast.Continue, ast.Break)):
                        unreachable.append(f"{os.path.relpath(path, REPO)}:{following.lineno}")
    assert unreachable == []


def test_every_function_and_class_of_the_package_is_used_or_documented():
    """A module-level function or class whose name appears nowhere but in its own definition (in the
    package, tools, tests, docs, notebooks) has no caller: it is dead code."""
    words = collections.Counter()
    for folder, folders, names in os.walk(REPO):
        folders[:] = [f for f in folders if not f.startswith(".") and f not in ("build", "dist", "runs")]
        for name in names:
            if name.endswith((".py", ".md", ".ipynb", ".yaml")):
                with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as handle:
                    words.update(re.findall(r"\w+", handle.read()))
    unused = [f"{os.path.relpath(path, REPO)}: {node.name}" for path, tree in _package_modules() for node in tree.body
              if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("__")
              and words[node.name] < 2]
    assert unused == []
