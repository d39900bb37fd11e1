"""Regularization layers whose strength can change after the model is compiled.

Progressive learning (paper §4, Algorithm 1) raises the dropout rate stage by stage inside one
`model.fit`. Keras' own `Dropout` cannot do that: its rate is a Python float baked into the traced
train step (a change needs `model.train_function = None`, a retrace), and a Dropout built with rate 0
skips dropping altogether. Here the rate lives in a Keras variable that the train step reads on every
call, so `set_regularization(model, ...)` takes effect in the next step, also inside an already
traced or XLA-compiled train function, on the TensorFlow and JAX backends.

The rate variable is deliberately *not* a weight: it is part of `layer.variables` (so the JAX trainer
threads it through its state like a seed generator's) but not of `layer.weights`, so parameter counts
equal the official ones and weight files stay interchangeable with keras.applications. Its current
value is saved in the layer config instead.
"""

import keras
from keras import ops


def _check_rate(rate, what):
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {rate}.")
    return rate


class _VariableRateDropout(keras.layers.Layer):
    """Inverted dropout with the rate in a non-weight variable; `noise_shape` picks what is dropped."""

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        rate = _check_rate(rate, f"{type(self).__name__} rate")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        # object.__setattr__ bypasses Keras' attribute tracking: see the module docstring.
        object.__setattr__(
            self,
            "_rate",
            keras.Variable(rate, dtype="float32", trainable=False, name="rate"),
        )

    @property
    def variables(self):
        return super().variables + [self._rate]

    @property
    def rate(self):
        """The rate in effect now (a Python float)."""
        return float(ops.convert_to_numpy(self._rate))

    def set_rate(self, rate):
        """Changes the rate; seen by the next train step, no retrace needed."""
        self._rate.assign(_check_rate(rate, f"{type(self).__name__} rate"))

    def _noise_shape(self, inputs):
        raise NotImplementedError

    def call(self, inputs, training=False):
        if not training:
            return inputs
        rate = ops.cast(self._rate, "float32")  # float32 under mixed precision too (autocast would halve it)
        noise = keras.random.uniform(
            self._noise_shape(inputs), dtype="float32", seed=self.seed_generator
        )
        # keep / (1 - rate) on the small noise tensor, then one multiply over the activations (not a
        # multiply and a divide: one full-size op fewer per block, forward and backward).
        scale = ops.cast(ops.greater_equal(noise, rate), "float32") / (1.0 - rate)
        return inputs * ops.cast(scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class AdjustableDropout(_VariableRateDropout):
    """Element-wise dropout (the classifier-head dropout) with a rate changeable after compiling."""

    def _noise_shape(self, inputs):
        return ops.shape(inputs)


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class StochasticDepth(_VariableRateDropout):
    """Drops a residual branch for whole examples (Huang et al. 2016), rate changeable after compiling.

    `rate` is this block's drop probability, 1 - survival. `block_fraction` is the block's global
    index divided by the number of blocks: the released code decays survival linearly with depth,
    survival_i = 1 - (1 - survival_prob) * i / N, so `set_regularization(model, survival_prob=p)` sets
    rate = (1 - p) * block_fraction here.
    """

    def __init__(self, rate=0.0, block_fraction=1.0, seed=None, **kwargs):
        super().__init__(rate=rate, seed=seed, **kwargs)
        if not 0.0 <= float(block_fraction) <= 1.0:
            raise ValueError(f"StochasticDepth block_fraction must be in [0, 1], got {block_fraction}.")
        self.block_fraction = float(block_fraction)

    def _noise_shape(self, inputs):
        return (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)

    def get_config(self):
        config = super().get_config()
        config["block_fraction"] = self.block_fraction
        return config
