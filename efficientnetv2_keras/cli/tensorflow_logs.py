"""TensorFlow's C++ start-up lines, kept off the terminal of the commands (all of them show with --verbose).

On a CPU machine TensorFlow 2.21 prints, before anything of ours:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    I0000 ... cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU ...
    E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... (303)

(the first three twice: two of TensorFlow's libraries log them while they load). TF_CPP_MIN_LOG_LEVEL=2,
set before TensorFlow is imported, hides INFO and WARNING lines logged after TensorFlow has read it
(cpu_feature_guard, and later ones such as tf.data's); the lines logged while the libraries load ignore
it and every other setting tried (levels 0-3, GLOG_minloglevel, ABSL_MIN_LOG_LEVEL; TF_ENABLE_ONEDNN_OPTS=0
hides the oneDNN line by turning oneDNN off). So `import tensorflow` (and the device set-up, where cuInit
fails) runs with file descriptor 2 captured, and the captured lines are replayed through the same level:
ERROR lines and everything that is not a TensorFlow log line (Python warnings, tracebacks) still show.
A TF_CPP_MIN_LOG_LEVEL of your own is kept and applied to the captured lines too.
"""

import os
import re
import sys
import tempfile

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = 2  # INFO and WARNING hidden, ERROR and FATAL shown
# absl/glog line prefixes: I(NFO), W(ARNING), E(RROR), F(ATAL), then the date.
_LOG_LINE = re.compile(r"^([IWEF])\d{4} ")
_LEVELS = "IWEF"
# absl's notice that the lines after it were logged before logging was set up: a warning about them.
_BEFORE_INIT_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_NO_CUDA_DRIVER = "Could not find cuda drivers"
_CUINIT_FAILED = "failed call to cuInit"


def verbose_requested(argv):
    """Whether the command line asks for --verbose (read before absl parses the flags, which happens
    after TensorFlow is imported)."""
    verbose = False
    for argument in argv[1:]:
        if argument == "--":
            break
        name, has_value, value = argument.lstrip("-").partition("=")
        if argument.startswith("-") and name == "verbose":
            verbose = not has_value or value.lower() in ("true", "t", "1", "yes")
        elif argument.startswith("-") and name == "noverbose":
            verbose = False
    return verbose


def lines_to_show(captured, min_level):
    """The captured start-up output less TensorFlow's log lines below `min_level` (0 INFO .. 3 FATAL only).

    A failed cuInit where no CUDA driver was found (a CPU machine) is expected and counts as INFO, like
    the line that says there is no driver; with a driver present it is an error to see.
    """
    if min_level <= 0:
        return captured
    no_driver = _NO_CUDA_DRIVER in captured
    kept = []
    for line in captured.splitlines(keepends=True):
        match = _LOG_LINE.match(line)
        level = _LEVELS.index(match.group(1)) if match else None
        if match and no_driver and _CUINIT_FAILED in line:
            level = 0
        if line.rstrip("\n") != _BEFORE_INIT_NOTICE and (level is None or level >= min_level):
            kept.append(line)
    return "".join(kept)


def _min_level():
    try:
        return int(os.environ.get(LEVEL_VARIABLE, DEFAULT_LEVEL))
    except ValueError:  # not a number: TensorFlow shows everything then
        return 0


def import_tensorflow_quietly(argv):
    """Imports TensorFlow (and sets up its devices) without its start-up lines, unless --verbose is in
    `argv` or TensorFlow is already imported. Call before anything imports TensorFlow."""
    if "tensorflow" in sys.modules or verbose_requested(argv):
        return
    os.environ.setdefault(LEVEL_VARIABLE, str(DEFAULT_LEVEL))
    try:
        terminal = os.dup(2)
    except OSError:  # no stderr to capture
        import tensorflow  # noqa: F401

        return
    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow

            tensorflow.config.list_physical_devices()  # where cuInit fails on a machine without a GPU
        finally:
            sys.stderr.flush()
            os.dup2(terminal, 2)
            os.close(terminal)
            capture.seek(0)
            sys.stderr.write(lines_to_show(capture.read().decode("utf-8", "replace"), _min_level()))
            sys.stderr.flush()
