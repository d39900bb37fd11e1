"""Per-variable optimizer and EMA updates in as few ops as the backend allows.

Keras 3 writes each optimizer's update in backend-neutral ops, per variable, recomputing the step's
scalars (learning rate casts, Adam's bias corrections) for every variable: about 35 ops per variable
for Adam in a traced TensorFlow train step, so thousands per step for a model with hundreds of
variables. A small train step on a CPU is bound by the number of ops. TensorFlow has one fused
kernel per update rule (`ResourceApplyAdam`, `ResourceApplyRMSProp`, `ResourceApplyKerasMomentum`,
`ResourceApplyGradientDescent`), with XLA kernels and tf.distribute support (they are what the Keras 2
optimizers ran). The functions here apply them where they compute exactly Keras' update:

  SGD        var -= lr * g                                     (ResourceApplyGradientDescent)
  momentum   m = momentum * m - lr * g; var += m               (ResourceApplyKerasMomentum; Nesterov:
             var += momentum * m - lr * g)
  RMSprop    ms += (g^2 - ms) * (1 - rho); mom = momentum * mom + lr * g / sqrt(ms + epsilon);
             var -= mom                                        (ResourceApplyRMSProp: epsilon inside
             the square root, as Keras; needs the momentum slot, so momentum > 0)
  Adam       m += (g - m) * (1 - beta_1); v += (g^2 - v) * (1 - beta_2);
             var -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)
                                                               (ResourceApplyAdam: epsilon outside)

The same formulas in keras ops (`rmsprop_update`, `adam_update`) serve the other backends when the
hyperparameters change per step (the square-root scaling rule, `training.optimizers`); otherwise
those backends run Keras' own `update_step`.
"""

import keras
from keras import ops

# The fused kernels' dtypes on CPU and GPU (bfloat16 is not registered on every device).
FUSED_DTYPES = ("float16", "float32", "float64")


def _tensorflow():
    # Imported on use: this module also serves the JAX and PyTorch backends, which run without it.
    import tensorflow as tf

    return tf


def fusable(gradient, variable):
    """Whether TensorFlow's fused kernels can apply `gradient` (dense) to `variable`."""
    if keras.backend.backend() != "tensorflow":
        return False
    tf = _tensorflow()
    return isinstance(gradient, tf.Tensor) and keras.backend.standardize_dtype(variable.dtype) in FUSED_DTYPES


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (the replica's, under tf.distribute)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


def apply_gradient_descent(variable, gradient, learning_rate):
    _tensorflow().raw_ops.ResourceApplyGradientDescent(var=_handle(variable), alpha=learning_rate, delta=gradient)


def apply_keras_momentum(variable, accumulator, gradient, learning_rate, momentum, nesterov):
    _tensorflow().raw_ops.ResourceApplyKerasMomentum(
        var=_handle(variable), accum=_handle(accumulator), lr=learning_rate, grad=gradient, momentum=momentum,
        use_nesterov=bool(nesterov),
    )


def apply_rmsprop(variable, mean_square, momentum_slot, gradient, values):
    _tensorflow().raw_ops.ResourceApplyRMSProp(
        var=_handle(variable), ms=_handle(mean_square), mom=_handle(momentum_slot), lr=values["learning_rate"],
        rho=values["rho"], momentum=values["momentum"], epsilon=values["epsilon"], grad=gradient,
    )


def apply_adam(variable, first_moment, second_moment, gradient, values):
    _tensorflow().raw_ops.ResourceApplyAdam(
        var=_handle(variable), m=_handle(first_moment), v=_handle(second_moment),
        beta1_power=values["beta_1_power"], beta2_power=values["beta_2_power"], lr=values["learning_rate"],
        beta1=values["beta_1"], beta2=values["beta_2"], epsilon=values["epsilon"], grad=gradient,
    )


def rmsprop_update(optimizer, variable, mean_square, momentum_slot, gradient, values):
    """Keras' RMSprop update (not centered) with this step's rho and epsilon, in keras ops."""
    rho = values["rho"]
    optimizer.assign(mean_square, rho * mean_square + (1.0 - rho) * ops.square(gradient))
    increment = values["learning_rate"] * gradient / ops.sqrt(mean_square + values["epsilon"])
    if momentum_slot is None:
        optimizer.assign_sub(variable, increment)
        return
    optimizer.assign(momentum_slot, values["momentum"] * momentum_slot + increment)
    optimizer.assign_sub(variable, momentum_slot)


def adam_update(optimizer, variable, first_moment, second_moment, gradient, values):
    """Keras' Adam update (no amsgrad) with this step's betas, epsilon and bias corrections, in keras ops."""
    alpha = values["learning_rate"] * ops.sqrt(1.0 - values["beta_2_power"]) / (1.0 - values["beta_1_power"])
    optimizer.assign_add(first_moment, (gradient - first_moment) * (1.0 - values["beta_1"]))
    optimizer.assign_add(second_moment, (ops.square(gradient) - second_moment) * (1.0 - values["beta_2"]))
    optimizer.assign_sub(variable, first_moment * alpha / (ops.sqrt(second_moment) + values["epsilon"]))


def move_average(average, value, weight):
    """average = (1 - weight) * average + weight * value, as average -= weight * (average - value).

    `weight` is 1 - the EMA decay, computed once per step by the caller. On TensorFlow one fused
    `ResourceApplyGradientDescent` per variable (step `weight`, "gradient" average - value) replaces
    Keras' multiply, multiply, add and assign.
    """
    weight = ops.cast(weight, average.dtype)
    difference = ops.subtract(average, ops.cast(value, average.dtype))
    if keras.backend.backend() == "tensorflow" and keras.backend.standardize_dtype(average.dtype) in FUSED_DTYPES:
        apply_gradient_descent(average, difference, weight)
    else:
        average.assign(ops.subtract(average, ops.multiply(weight, difference)))
