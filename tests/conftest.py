"""Shared test helpers. Tests use tiny inputs and tiny model tables to stay fast on 2 CPU cores."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from efficientnetv2_keras.models.family import FUSED_MBCONV, MBCONV, ModelSpec, StageSpec  # noqa: E402

# A three-stage table with both block types, SE, stride 1 and 2, and residual blocks: the builder
# handles any table, so most behaviour is tested on this instead of a real variant.
TINY_SPEC = ModelSpec(
    name="efficientnetv2-tiny",
    stages=(
        StageSpec(FUSED_MBCONV, 3, 1, 1, 8, 8, 1),
        StageSpec(FUSED_MBCONV, 3, 2, 2, 8, 16, 2),
        StageSpec(MBCONV, 3, 2, 2, 16, 24, 2, 0.25),
    ),
    head_filters=32,
)


@pytest.fixture
def tiny_spec():
    return TINY_SPEC
