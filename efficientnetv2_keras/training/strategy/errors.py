"""The two ways a strategy cannot start; the commands report both as usage errors (efficientnetv2_keras.cli)."""


class StrategyUnavailableError(RuntimeError):
    """The requested runtime.strategy cannot run on this machine (no TPU, no GPU): the commands report it
    as a usage error (efficientnetv2_keras.cli)."""

class ClusterError(RuntimeError):
    """A multi-worker cluster that cannot start: a peer that never came up, a port in use."""
