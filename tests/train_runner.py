"""tools/train.py with a tiny model table, for the subprocess tests of interruption and multi-worker runs.

    python tests/train_runner.py <tools/train.py flags>

Environment:
  RUNNER_KILL_ON_RENAME="<file name>:<n>": SIGKILL this process at the n-th (1-based) atomic write of a
    file of that name, after the temporary copy is written and flushed but before it is renamed over
    the old one (the worst moment for a non-atomic writer).
  RUNNER_KILL_AT_EPOCH=<n>: SIGKILL at the start of epoch n (1-based), e.g. between two epochs.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import TINY_SPEC  # noqa: E402

from efficientnetv2_keras import files  # noqa: E402
from efficientnetv2_keras.models import build_model  # noqa: E402
from efficientnetv2_keras.training import recipe_model  # noqa: E402


def tiny_build_model(name, **kwargs):
    return build_model(TINY_SPEC, **kwargs)


recipe_model.build_model = tiny_build_model

kill_on_rename = os.environ.get("RUNNER_KILL_ON_RENAME")
if kill_on_rename:
    target, count = kill_on_rename.rsplit(":", 1)
    seen = [0]
    original_replace = files._replace

    def replace(temporary, path, token):
        if os.path.basename(path) == target:
            seen[0] += 1
            if seen[0] == int(count):
                os.kill(os.getpid(), signal.SIGKILL)
        return original_replace(temporary, path, token)

    files._replace = replace

kill_at_epoch = os.environ.get("RUNNER_KILL_AT_EPOCH")
if kill_at_epoch:
    import keras

    from efficientnetv2_keras.training import divergence

    class _Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch + 1 == int(kill_at_epoch):
                os.kill(os.getpid(), signal.SIGKILL)

    original_init = divergence.StopOnNonFiniteLoss.__init__
    # Rides on a callback every run has: the kill happens inside fit, between two epochs.
    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._kill = _Kill()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._kill.on_epoch_begin(epoch)

    divergence.StopOnNonFiniteLoss.__init__ = init
    divergence.StopOnNonFiniteLoss.on_epoch_begin = on_epoch_begin

sys.argv[0] = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "train.py")
import runpy  # noqa: E402

runpy.run_path(sys.argv[0], run_name="__main__")
