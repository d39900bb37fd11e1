"""What the package says to the person running it (`say`): one function for the trainer, its callbacks and
the progressive-learning callback."""

import logging as python_logging
import sys

from absl import logging


def say(text):
    """Printed for the person at the terminal, and logged (absl) for the job's log unless that log is the
    terminal too (absl's handler writing to stderr, its default under absl.app.run): said once there."""
    print(text, flush=True)
    handler = logging.get_absl_handler()
    if handler not in python_logging.getLogger().handlers or handler.python_handler.stream is not sys.stderr:
        logging.info(text)
