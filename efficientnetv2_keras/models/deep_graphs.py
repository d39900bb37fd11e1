"""Room on Python's stack for Keras' deep functional graphs.

Keras connects, clones and deserializes a functional graph recursively (keras/src/ops/function.py
walks it depth-first, a few frames per layer): XL, about 1,200 layers deep, needs more than Python's
default limit of 1,000 frames. `allow_deep_graphs` raises the limit where a model of this package is
made: in `build_model`, and when Keras deserializes the BatchNorm layer every such model has
(`keras.saving.load_model`, `Model.from_config`, `clone_model`). Importing the package leaves the limit
alone. It is never lowered again: another deep graph may be in the making (a thread, a nested build).
"""

import sys

RECURSION_LIMIT = 10_000


def allow_deep_graphs():
    """Raises Python's recursion limit to RECURSION_LIMIT unless it is higher already."""
    if sys.getrecursionlimit() < RECURSION_LIMIT:
        sys.setrecursionlimit(RECURSION_LIMIT)
