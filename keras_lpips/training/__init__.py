"""Learning LPIPS from human 2AFC judgments, as the reference `lpips.Trainer` / `train.py` do,
with Keras `fit`, `tf.distribute` and mixed precision.

- `trainer`: `LPIPSTrainer`, the metric plus the ranking head, one 2AFC step;
- `frozen`: lin mode's shortcut, the frozen backbone's work done once per triplet;
- `optimizer`: torch's Adam, the reference's schedule and linear-weight init;
- `devices`: mixed-precision policy and distribution strategy;
- `precision`: the float32 copies a mixed-precision run saves and validates;
- `run_folder`: every file a run writes (checkpoints, history, plots, run.json, the model);
- `run_config`: `RunConfig`, a run's options, checked and recorded;
- `fit`: the driver, a short recipe over a `RunConfig`.

Training needs the TensorFlow backend (`tf.GradientTape`, `tf.data`, `tf.distribute`).
"""

from keras_lpips.training.fit import fit, fit_run
from keras_lpips.training.optimizer import EpochLinearDecay, TorchAdam, reference_adam
from keras_lpips.training.run_config import RunConfig
from keras_lpips.training.trainer import LPIPSTrainer

__all__ = ["EpochLinearDecay", "LPIPSTrainer", "RunConfig", "TorchAdam", "fit", "fit_run", "reference_adam"]
