"""The command-line tools, installed as console scripts by `pip install`:

    effnetv2-train             efficientnetv2_keras.cli.train            train and/or evaluate a recipe
    effnetv2-evaluate          efficientnetv2_keras.cli.evaluate         a checkpoint on the test split
    effnetv2-predict           efficientnetv2_keras.cli.predict          top-k labels for image files
    effnetv2-export            efficientnetv2_keras.cli.export           SavedModel / TFLite / ONNX with parity
    effnetv2-summary           efficientnetv2_keras.cli.summary          the family's parameters and FLOPs
    effnetv2-convert-weights   efficientnetv2_keras.cli.convert_weights  timm checkpoints -> .weights.h5
    effnetv2-benchmark         efficientnetv2_keras.cli.benchmark        speed against keras.applications
    effnetv2-nas               efficientnetv2_keras.cli.nas              training-aware architecture search

Each also runs as `python -m efficientnetv2_keras.cli.<module>`; a source checkout's `tools/*.py` call the
same modules. Every tool is flag parsing plus library calls (the library is what a notebook uses).

Errors a user can fix (a mistyped recipe key, a missing file or run directory, a strategy this machine
cannot run, too few epochs for the stages, a bad flag) end in one line on stderr,
`<tool>: error: <what is wrong and the fix>`, and exit status 2, the usage-error status of absl and
argparse; `--verbose` shows the Python traceback instead. Anything else is a bug and keeps its traceback.

`--help` (and --helpshort, --helpfull, --helpxml) prints the usage and exits 0, so `cmd --help && ...`
goes on. TensorFlow's C++ start-up lines (oneDNN, CUDA drivers, cuInit, CPU features) stay off the
terminal unless --verbose: this package imports TensorFlow here, first (cli/tensorflow_logs.py).
"""

import os
import sys

from absl import app, flags

from efficientnetv2_keras.cli.tensorflow_logs import import_tensorflow_quietly

# Every command imports this module before anything that imports TensorFlow (`import efficientnetv2_keras`
# does not): the log level is set and the start-up lines are captured before TensorFlow first loads.
import_tensorflow_quietly(sys.argv)

flags.DEFINE_bool("verbose", False, "On an error, show the Python traceback, and TensorFlow's start-up log lines.")

# What a user's input can cause (efficientnetv2_keras.hparams.ConfigError is a ValueError; missing
# files are OSErrors; a missing optional dependency is an ImportError naming the extra to install).
USER_ERRORS = (ValueError, OSError, ImportError)
USAGE_EXIT = 2


def _user_errors():
    """USER_ERRORS, plus the strategy error when the tool got as far as choosing a strategy."""
    strategy = sys.modules.get("efficientnetv2_keras.training.strategy")  # imports TensorFlow: not here
    return USER_ERRORS + ((strategy.StrategyUnavailableError, strategy.ClusterError) if strategy else ())


def program():
    name = os.path.basename(sys.argv[0] or "effnetv2")
    return name[:-3] if name.endswith(".py") else name


def _fail(message):
    message = " ".join(str(message).split())  # one line, however the message was wrapped
    print(f"{program()}: error: {message}", file=sys.stderr)
    sys.exit(USAGE_EXIT)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        _fail(f"{error} (--help lists the flags)")
    except SystemExit as exit:
        # Only absl's help flags exit while the flags are parsed, after printing the usage, with status 1
        # (absl.app.HelpFlag); asking for help is not an error.
        sys.exit(0 if exit.code == 1 else exit.code)


def _show_in_help(module_name):
    """`--help` shows the main module's docstring and key flags: make them the tool's (its module is not
    `__main__` when run as a console script or through tools/*.py)."""
    main = sys.modules.get("__main__")
    if main is not None and module_name != "__main__" and module_name in sys.modules:
        main.__doc__ = sys.modules[module_name].__doc__
    for flag in flags.FLAGS.get_flags_for_module(module_name) + [flags.FLAGS["verbose"]]:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(main):
    """`absl.app.run(main)`, with user errors as one line and exit status 2 (see the module docstring).

    main(argv) may return an exit status (0 or None: success).
    """

    _show_in_help(main.__module__)

    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError as error:
            if flags.FLAGS.verbose:
                raise
            _fail(f"{error} (--help lists the flags)")
        except Exception as error:
            if flags.FLAGS.verbose or not isinstance(error, _user_errors()):
                raise
            _fail(f"{error} (--verbose shows the traceback)")

    app.run(guarded, flags_parser=_parse_flags)
