"""The reference trainer's optimisation: torch's Adam, its learning-rate schedule, its linear-weight init."""

import math

import keras
import numpy as np
from keras import ops

from keras_lpips.keras_compat import adam_moments


@keras.saving.register_keras_serializable(package="keras_lpips")
class EpochLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The reference `train.py` schedule, per optimiser step: epoch e (from 0) runs at
    `lr * (1 - max(0, e - epochs) / decay_epochs)`: `epochs + 1` epochs at the full rate, then
    linearly lower, the last of the `epochs + decay_epochs` epochs at `lr / decay_epochs`
    (the reference lowers the rate at the end of every epoch after the first `epochs`)."""

    def __init__(self, initial_learning_rate, steps_per_epoch, epochs, decay_epochs):
        self.initial_learning_rate = float(initial_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.decay_epochs = int(decay_epochs)

    def __call__(self, step):
        epoch = ops.floor(ops.cast(step, "float32") / float(self.steps_per_epoch))
        if self.decay_epochs <= 0:
            return ops.cast(self.initial_learning_rate, "float32") + 0.0 * epoch
        fraction = ops.maximum(epoch - float(self.epochs), 0.0) / float(self.decay_epochs)
        return self.initial_learning_rate * (1.0 - ops.minimum(fraction, 1.0))

    def rate_at_epoch(self, epoch):
        """The rate epoch `epoch` (from 0) runs at, as a Python float."""
        if self.decay_epochs <= 0:
            return self.initial_learning_rate
        return self.initial_learning_rate * (1.0 - min(max(epoch - self.epochs, 0) / self.decay_epochs, 1.0))

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "decay_epochs": self.decay_epochs,
        }


@keras.saving.register_keras_serializable(package="keras_lpips")
class TorchAdam(keras.optimizers.Adam):
    """Adam with torch.optim.Adam's update, which the reference trainer uses.

    Keras adds epsilon to sqrt(v) before the bias correction, torch after it:
    `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`. The two differ where
    gradients are tiny (below ~1e-6, e.g. rarely active channels), so matching the
    reference's steps there needs torch's form. Arguments are Keras Adam's
    (amsgrad is not supported); epsilon defaults to torch's 1e-8.
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, amsgrad=False, name="torch_adam", **kwargs):
        if amsgrad:
            raise ValueError("TorchAdam does not support amsgrad")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        m, v = adam_moments(self, variable)
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
        self.assign(v, ops.add(ops.multiply(v, beta_2), ops.multiply(ops.square(gradient), 1 - beta_2)))
        step_size = lr / (1 - ops.power(beta_1, step))
        denom = ops.add(ops.sqrt(v) / ops.sqrt(1 - ops.power(beta_2, step)), ops.cast(self.epsilon, dtype))
        self.assign_sub(variable, ops.multiply(step_size, ops.divide(m, denom)))


def reference_adam(learning_rate=1e-4, beta_1=0.5):
    """The reference trainer's optimiser: torch's Adam, betas (0.5, 0.999), epsilon 1e-8 (`TorchAdam`)."""
    return TorchAdam(learning_rate=learning_rate, beta_1=beta_1, beta_2=0.999, epsilon=1e-8)


def reference_lin_init(metric, seed):
    """Sets the linear weights as the reference trainer starts them (`LPIPS(pretrained=False)`):
    torch's default 1x1 conv init, uniform in +-1/sqrt(channels), from `seed`. The negative
    ones are clamped to 0 by the first step, as in the reference."""
    rng = np.random.default_rng([int(seed), 7])
    for head in metric.heads:
        bound = 1.0 / math.sqrt(head.channels)
        head.kernel.assign(rng.uniform(-bound, bound, (head.channels, 1)).astype(np.float32))
