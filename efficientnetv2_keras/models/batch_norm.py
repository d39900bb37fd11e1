"""BatchNormalization whose training step on TensorFlow is one fused op forward and one backward.

Keras 3's `BatchNormalization` computes the batch moments, the normalization and the moving-average
updates as separate ops: about 36 ops forward and 52 backward per layer in a traced TensorFlow train
step. A small train step on a CPU is bound by the number of ops, and B0's 59 BatchNorm layers were
half of all of them. TensorFlow's `FusedBatchNormV3` normalizes with the batch statistics in one op
and its registered gradient (`FusedBatchNormGradV3`) is one op too.

`FusedBatchNormalization` is Keras' layer (same arguments, variables, names and weight layout, so
weight files and parameter counts are unchanged) with a training call that uses the fused op where it
computes what Keras computes: TensorFlow backend, 4-D float16/float32 inputs, no mask, no
`synchronized` (cross-replica) statistics, no renorm, both `center` and `scale`. Everything else,
inference included, is Keras' own code, so outputs equal keras.applications' given the same weights.
The moving statistics are updated as Keras updates them: moving = moving * momentum + batch * (1 -
momentum), with the *biased* batch variance (the fused op returns the Bessel-corrected one).
"""

import keras
from keras import ops

from efficientnetv2_keras.models.deep_graphs import allow_deep_graphs

# cuDNN's smallest epsilon (CUDNN_BN_MIN_EPSILON is 1e-5; TensorFlow's GPU kernel needs it above that).
MIN_FUSED_EPSILON = 1.001e-5
FUSED_INPUT_DTYPES = ("float16", "float32")
CHANNEL_AXES = {-1: "NHWC", 3: "NHWC", 1: "NCHW"}


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with TensorFlow's fused kernel in training (module docstring).

    fused: False keeps Keras' own training computation (for comparisons and benchmarks).
    """

    def __init__(self, *args, fused=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = bool(fused)

    @classmethod
    def from_config(cls, config):
        # Every model of this package has this layer: Keras is about to connect a graph of ours, which
        # may be deeper than Python's default recursion limit allows (deep_graphs.py).
        allow_deep_graphs()
        return super().from_config(config)

    def call(self, inputs, training=None, mask=None):
        if training and self.trainable and self._fusable(inputs, mask):
            return self._fused_training_call(inputs)
        return super().call(inputs, training=training, mask=mask)

    def _fusable(self, inputs, mask):
        return (
            self.fused
            and keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.synchronized
            and not self.renorm
            and self.center
            and self.scale
            and len(inputs.shape) == 4
            and self.axis in CHANNEL_AXES
            and keras.backend.standardize_dtype(inputs.dtype) in FUSED_INPUT_DTYPES
            and self.epsilon >= MIN_FUSED_EPSILON
        )

    def _fused_training_call(self, inputs):
        # TensorFlow is imported here, in the TensorFlow-only branch: model code imports keras alone at
        # module level, so the models also build and run on the JAX and PyTorch backends.
        import tensorflow as tf

        outputs, mean, corrected_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma.value, self.beta.value, epsilon=self.epsilon,
            data_format=CHANNEL_AXES[self.axis], is_training=True,
        )
        # The op's variance is the batch's unbiased estimate (x n / (n - 1)); Keras' moving variance
        # averages the biased one, which the op normalized with.
        # (n - 1) / n with n = size / channels, the values per channel.
        variance = corrected_variance * (1.0 - float(inputs.shape[self.axis]) / tf.cast(tf.size(inputs), "float32"))
        for moving, batch_value in ((self.moving_mean, mean), (self.moving_variance, variance)):
            # moving * momentum + batch * (1 - momentum), written moving -= (moving - batch) * (1 - momentum):
            # one AssignSub on the variable (a tf.Variable's, so tf.distribute's replica rules apply).
            moving = moving.value
            moving.assign_sub((moving - batch_value) * (1.0 - self.momentum), read_value=False)
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "fused": self.fused}
