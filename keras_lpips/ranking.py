"""Learning from human 2AFC judgments: the reference's ranking head, its loss, and the scores.

The reference (`lpips.trainer.Trainer`, `lpips.BCERankingLoss`) turns the two
distances d0 = d(ref, p0) and d1 = d(ref, p1) into the probability that raters
prefer p1 with a small network (`Dist2LogitLayer`), and trains it together with
the linear weights by binary cross-entropy against the fraction of raters who
preferred p1. `DistanceToLogit` is that network, `ranking_loss` that loss,
`TwoAFCScore` / `twoafc_score` the 2AFC agreement, and `jnd_map` the JND mAP,
each as the reference computes them.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_lpips.argument_checks import check_seed
from keras_lpips.array_checks import as_numpy


def _torch_uniform(fan_in, seed):
    """torch.nn.Conv2d's default initialisation of weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    limit = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-limit, limit, seed=seed)


@keras.saving.register_keras_serializable(package="keras_lpips")
class DistanceToLogit(keras.layers.Layer):
    """P(raters prefer p1) from the distances `d0 = d(ref, p0)` and `d1 = d(ref, p1)`.

    The reference `lpips.Dist2LogitLayer`: the features
    `[d0, d1, d0 - d1, d0 / (d1 + eps), d1 / (d0 + eps)]` go through three 1x1
    convolutions (5 -> hidden -> hidden -> 1, with biases) with LeakyReLU(0.2)
    between them and a sigmoid at the end. On a `(N, 5)` vector those are Dense
    layers; the kernels are the reference's `(out, in, 1, 1)` weights transposed.
    Weights start as torch's default (uniform in +-1/sqrt(fan_in)), from `seed`.
    Runs in float32, also under a mixed-precision policy.

    Input: `[d0, d1]`, each of shape `(N,)`. Output: probabilities, shape `(N,)`.

    Example:
    >>> head = DistanceToLogit(seed=0)
    >>> head([np.array([0.1, 0.5]), np.array([0.4, 0.2])])  # -> (2,) in (0, 1)
    """

    def __init__(self, hidden=32, epsilon=0.1, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(hidden) < 1 or not float(epsilon) > 0:
            raise ValueError(f"need hidden >= 1 and epsilon > 0. Received: hidden={hidden}, epsilon={epsilon}")
        self.hidden, self.epsilon, self.seed = int(hidden), float(epsilon), check_seed(seed, allow_none=True)
        seeds = [None] * 6 if seed is None else [int(seed) * 6 + i for i in range(6)]
        self.dense = []
        for i, (fan_in, units) in enumerate(((5, self.hidden), (self.hidden, self.hidden), (self.hidden, 1))):
            self.dense.append(
                keras.layers.Dense(
                    units,
                    kernel_initializer=_torch_uniform(fan_in, seeds[2 * i]),
                    bias_initializer=_torch_uniform(fan_in, seeds[2 * i + 1]),
                    dtype=self.dtype_policy,
                    name=f"dense{i}",
                )
            )

    def build(self, input_shape=None):
        width = 5
        for dense in self.dense:
            dense.build((None, width))
            width = dense.units
        self.built = True

    def features(self, d0, d1):
        """The reference's five inputs, `(N, 5)`."""
        d0, d1 = ops.reshape(d0, (-1,)), ops.reshape(d1, (-1,))
        return ops.stack([d0, d1, d0 - d1, d0 / (d1 + self.epsilon), d1 / (d0 + self.epsilon)], axis=-1)

    def logits(self, inputs):
        """The pre-sigmoid output, `(N,)`."""
        d0, d1 = inputs
        x = self.features(ops.cast(d0, self.compute_dtype), ops.cast(d1, self.compute_dtype))
        x = ops.leaky_relu(self.dense[0](x), 0.2)
        x = ops.leaky_relu(self.dense[1](x), 0.2)
        return self.dense[2](x)[:, 0]

    def call(self, inputs):
        return ops.sigmoid(self.logits(inputs))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "epsilon": self.epsilon, "seed": self.seed}

    def set_torch_weights(self, state):
        """Loads a reference `Dist2LogitLayer` state dict (`model.0.weight` ... as numpy arrays)."""
        for dense, index in zip(self.dense, (0, 2, 4)):
            kernel = np.asarray(state[f"model.{index}.weight"], np.float32)
            dense.set_weights([kernel[:, :, 0, 0].T, np.asarray(state[f"model.{index}.bias"], np.float32)])

    def torch_weights(self):
        """The weights as a reference `Dist2LogitLayer` state dict (numpy arrays, `(out, in, 1, 1)` kernels)."""
        state = {}
        for dense, index in zip(self.dense, (0, 2, 4)):
            kernel, bias = dense.get_weights()
            state[f"model.{index}.weight"] = kernel.T[:, :, None, None]
            state[f"model.{index}.bias"] = bias
        return state


def ranking_loss(judge, prob):
    """Per-triplet binary cross-entropy of P(p1 preferred) against `judge` (the fraction of raters
    preferring p1), as torch's `BCELoss`: each log clamped at -100. Shape `(N,)`.

    The reference trainer passes `judge * 2 - 1` to `BCERankingLoss`, which maps it back with
    `(judge + 1) / 2`, so the target is the judge itself.
    """
    judge = ops.cast(ops.reshape(judge, (-1,)), prob.dtype)
    log_p = ops.maximum(ops.log(prob), -100.0)
    log_not_p = ops.maximum(ops.log(1.0 - prob), -100.0)
    return -(judge * log_p + (1.0 - judge) * log_not_p)


def twoafc_scores(d0, d1, judge):
    """Per-triplet agreement with the raters, as the reference's `score_2afc_dataset`:
    `(d0 < d1) * (1 - judge) + (d1 < d0) * judge + (d0 == d1) * 0.5`. Works on numpy arrays and tensors."""
    if isinstance(d0, (np.ndarray, list, tuple, float)):
        d0, d1, judge = (as_numpy(v, np.float64).reshape(-1) for v in (d0, d1, judge))
        return (d0 < d1) * (1.0 - judge) + (d1 < d0) * judge + (d1 == d0) * 0.5
    d0, d1 = ops.reshape(d0, (-1,)), ops.reshape(d1, (-1,))
    judge = ops.cast(ops.reshape(judge, (-1,)), d0.dtype)
    as_float = lambda condition: ops.cast(condition, d0.dtype)  # noqa: E731
    return as_float(d0 < d1) * (1.0 - judge) + as_float(d1 < d0) * judge + as_float(d0 == d1) * 0.5


def twoafc_score(d0, d1, judge):
    """The 2AFC score: the mean of `twoafc_scores` (1.0: always agrees with the raters)."""
    return float(np.mean(twoafc_scores(*(as_numpy(v) for v in (d0, d1, judge)))))


def scores_by_subset(scores, subsets):
    """{subset: mean score, ..., "all": mean over every item, "mean": mean of the subsets' means}
    (subsets in order of appearance). "all" weighs each triplet alike (the running `TwoAFCScore`
    in training logs); "mean" each subset alike (the headline of `evaluate_run` and studies).
    They differ where subsets differ in size, as BAPPS' val subsets do."""
    scores, subsets = np.asarray(scores, np.float64), np.asarray(subsets)
    result = {str(s): float(scores[subsets == s].mean()) for s in dict.fromkeys(subsets.tolist())}
    means = list(result.values())
    result["all"], result["mean"] = float(scores.mean()), float(np.mean(means))
    return result


@keras.saving.register_keras_serializable(package="keras_lpips")
class TwoAFCScore(keras.metrics.Metric):
    """Running 2AFC score: the mean agreement of `d0 < d1` with the raters' `judge`.

    `update_state(d0, d1, judge)` with distances `d0 = d(ref, p0)`, `d1 = d(ref, p1)`
    and judge the fraction of raters who preferred p1; ties count one half.
    """

    def __init__(self, name="2afc", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, d0, d1, judge):
        d0 = ops.cast(d0, "float32")
        scores = twoafc_scores(d0, ops.cast(d1, "float32"), ops.cast(judge, "float32"))
        self.total.assign_add(ops.sum(scores))
        self.count.assign_add(ops.cast(ops.shape(scores)[0], "float32"))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


def voc_ap(recall, precision):
    """Area under the precision-recall curve, the reference's `lpips.voc_ap(..., use_07_metric=False)`."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the precision envelope
    changed = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changed + 1] - mrec[changed]) * mpre[changed + 1]))


def jnd_map(distances, same):
    """JND mAP, as the reference's `score_jnd_dataset`: pairs sorted by distance (ascending) are
    taken as "same" predictions in turn; `same` (the fraction of raters who saw no difference)
    counts as true positives, `1 - same` as false positives; the score is the area under the
    precision-recall curve (`voc_ap`)."""
    distances = as_numpy(distances, np.float64).reshape(-1)
    same = as_numpy(same, np.float64).reshape(-1)
    if distances.shape != same.shape or distances.size == 0:
        raise ValueError(f"need equally many distances and judgments, at least one. Received: {distances.shape}, {same.shape}")
    same_sorted = same[np.argsort(distances)]
    true_pos = np.cumsum(same_sorted)
    false_pos = np.cumsum(1.0 - same_sorted)
    false_neg = np.sum(same_sorted) - true_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = true_pos / (true_pos + false_pos)
        recall = true_pos / (true_pos + false_neg)
    return voc_ap(recall, precision)
