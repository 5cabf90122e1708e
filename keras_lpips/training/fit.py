"""`fit`: train LPIPS on the 2AFC judgments of a BAPPS-layout folder, as the reference `train.py`.

    summary = fit(RunConfig("dataset", "runs/alex-lin", backbone="alex", mode="lin"))
    summary = fit_run("dataset", "runs/alex-lin", backbone="alex", mode="lin")   # the same
"""

import dataclasses
import math
import pathlib
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_lpips.argument_checks import MAX_BATCH_SIZE, MAX_LOAD_SIZE, check_integer, check_seed, is_number
from keras_lpips.array_checks import check_load_size
from keras_lpips.backbones import get_backbone
from keras_lpips.data.bapps import fingerprint, list_twoafc, resolve_root
from keras_lpips.data.pipeline import naming_bad_images, twoafc_dataset
from keras_lpips.errors import InputError, note
from keras_lpips.files import check_output
from keras_lpips.model import LPIPS, _check_choices
from keras_lpips.ranking import DistanceToLogit, scores_by_subset, twoafc_scores
from keras_lpips.training.devices import PRECISIONS, STRATEGIES, make_strategy, resolve_precision, worker_role
from keras_lpips.training.frozen import FrozenBackbone, FrozenBackboneTrainer, concatenated, frozen_twoafc_arrays
from keras_lpips.training.optimizer import EpochLinearDecay, reference_adam, reference_lin_init
from keras_lpips.training.precision import Float32Validation, float32_copy
from keras_lpips.training.run_folder import NAMED_WEIGHTS, UNTRAINED, RunFolder, now, recorded_weights
from keras_lpips.training.trainer import LPIPSTrainer
from keras_lpips.weights.sources import IMAGENET, KERAS_IMAGENET, UNTRAINED_NAMES

MODES = ("lin", "tune", "scratch")
INPUT_RANGE = (0.0, 1.0)  # what fit feeds, and what the saved model.keras expects (the CLI's range)


@dataclasses.dataclass
class RunConfig:
    """Everything one training run is configured by (recorded in its run.json).

    Attributes:
        data_root: the BAPPS folder (holding `2afc/train`, `2afc/val`).
        out_dir: the run folder (new or empty, or an earlier run's with `resume=True`).
        backbone: "alex", "vgg", "squeeze" (or "alexnet", "vgg16", "squeezenet").
        distance: "lpips" (linear weights and ranker learn) or "cosine" (only the ranker learns).
        layers: keep the first N tapped layers (None: all).
        mode: "lin" (backbone frozen), "tune" (the pretrained backbone learns too) or "scratch"
            (the backbone starts from a seeded random init and learns), as the reference's flags.
        backbone_weights: "imagenet", "random" or a torchvision `.pth`/`.npz`; None: "imagenet",
            or "random" in "scratch" mode (which refuses anything else).
        subsets / val_subsets: 2AFC subsets to train / validate on (None: every one present).
        epochs, decay_epochs: `epochs + decay_epochs` epochs in all, on the reference's schedule
            (`EpochLinearDecay`): the `epochs` and the first decay epoch at `lr`, then each one
            `lr / decay_epochs` lower, the last at `lr / decay_epochs`.
        batch_size: the global batch (split across replicas under a distribution strategy).
        lr, beta_1: Adam's (the reference's 1e-4 and 0.5; beta_2 0.999, epsilon 1e-8).
        load_size: images are resized to load_size x load_size (BAPPS patches are 64 x 64).
        lin_init: "reference" (torch's default conv init, seeded) or "ones" (start from cosine).
        dropout: dropout before the linear heads while training (the reference's 0.5; 0: none).
        mixed_precision: "auto", "off", "bf16" or "fp16" (`resolve_precision`): what the backbone
            trains in. Validation and the saved models are float32 whatever it is
            (`keras_lpips.training.precision`); a resumed run compares the policy it resolves to.
        strategy: "auto", "one-device", "mirrored", "multiworker" or "tpu" (`make_strategy`).
        resume: continue the run in `out_dir` from its last finished epoch; where there is none,
            a new run starts (a note says so: `KerasLPIPSNote`, a warning).
        seed: seeds the initialisation, the epoch orders and dropout.
        deterministic: bit-reproducible ops and data order (slower).
        progress: progress output.
        cache: keep the validation set's decoded images in memory (`twoafc_dataset`).
        precompute_frozen: in "lin" mode on one device, do the frozen backbone's work once per
            triplet (`keras_lpips.training.frozen`); False: every step runs the backbone.
    """

    data_root: str
    out_dir: str
    backbone: str = "alex"
    distance: str = "lpips"
    layers: int | None = None
    mode: str = "lin"
    backbone_weights: str | None = None
    subsets: list | None = None
    val_subsets: list | None = None
    epochs: int = 5
    decay_epochs: int = 5
    batch_size: int = 50
    lr: float = 1e-4
    beta_1: float = 0.5
    load_size: int = 64
    lin_init: str = "reference"
    dropout: float = 0.5
    mixed_precision: str = "auto"
    strategy: str = "auto"
    resume: bool = False
    seed: int = 0
    deterministic: bool = False
    progress: bool = True
    cache: bool = False
    precompute_frozen: bool = True

    def __post_init__(self):
        """Checks every option (`InputError`), before `fit` creates or reads anything."""
        for name, choices in (("mode", MODES), ("lin_init", ("reference", "ones")), ("mixed_precision", PRECISIONS),
                              ("strategy", STRATEGIES)):  # fmt: skip
            if getattr(self, name) not in choices:
                raise InputError(f"{name} must be one of {', '.join(choices)}. Received: {getattr(self, name)!r}")
        if self.distance == "cosine" and self.mode != "lin":
            raise InputError("distance 'cosine' has no linear weights: only the ranking head learns, so mode must be 'lin'")
        if self.backbone_weights in UNTRAINED_NAMES:  # "none" is "random", recorded as that
            self.backbone_weights = UNTRAINED
        if self.mode == "scratch" and self.backbone_weights not in (None, UNTRAINED):
            raise InputError(f"mode 'scratch' trains the backbone from a random init; drop backbone_weights={self.backbone_weights!r}")
        self._check_numbers()
        self.backbone_weights = self.backbone_weights or (UNTRAINED if self.mode == "scratch" else IMAGENET)
        spec = get_backbone(self.backbone)
        if self.backbone_weights == KERAS_IMAGENET and spec.name != "vgg":  # as LPIPS refuses it
            raise InputError(f"backbone_weights='keras-imagenet' exists for vgg only. Received: backbone={self.backbone!r}")
        kept = _check_choices(spec, "0.1", self.distance, self.layers, INPUT_RANGE)
        check_load_size(self.load_size, spec.min_input_size[kept - 1], spec.name, kept)
        self.subsets, self.val_subsets = self._subset_list("subsets", self.subsets), self._subset_list("val_subsets", self.val_subsets)

    def _check_numbers(self):
        """`InputError` for a numeric option out of its range: zero, negative, NaN, infinite, a bool."""
        for name in ("epochs", "decay_epochs"):
            check_integer(name, getattr(self, name), 0)
        check_seed(self.seed)
        if self.epochs + self.decay_epochs < 1:
            raise InputError("nothing to train: epochs + decay_epochs must be at least 1")
        check_integer("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_integer("load_size", self.load_size, 1, MAX_LOAD_SIZE)
        if not (is_number(self.lr) and 0 < self.lr < math.inf):
            raise InputError(f"lr must be a positive finite number. Received: lr={self.lr!r}")
        for name in ("beta_1", "dropout"):
            value = getattr(self, name)
            if not (is_number(value) and 0 <= value < 1):
                raise InputError(f"{name} must be a number from 0 to less than 1. Received: {name}={value!r}")

    @staticmethod
    def _subset_list(name, subsets):
        """`subsets` (None, a subset's name, or a list or tuple of names) as None or a list of names;
        `InputError` naming `name` for anything else (a number is no subset's name)."""
        if subsets is None:
            return None
        names = [subsets] if isinstance(subsets, str) else subsets
        if not (isinstance(names, (list, tuple)) and all(isinstance(n, str) and n for n in names)):
            raise InputError(f"{name} must be a subset's name or a list of them (strings). Received: {name}={subsets!r}")
        return list(names)

    @property
    def total_epochs(self):
        return int(self.epochs) + int(self.decay_epochs)

    def record(self, train_records, val_records, policy):
        """The configuration as run.json records it (and `resume=True` compares it), with what
        identifies the training and validation sets (`fingerprint`: their size, their files and
        judgments), so that a run never resumes on other data."""
        record = dataclasses.asdict(self)
        del record["out_dir"], record["cache"], record["precompute_frozen"]
        record.update(
            data_root=str(pathlib.Path(self.data_root).resolve()), backbone_weights=recorded_weights(self.backbone_weights),
            subsets=sorted({r.subset for r in train_records}), val_subsets=sorted({r.subset for r in val_records}),
            train_set=fingerprint(train_records, self.data_root), val_set=fingerprint(val_records, self.data_root),
            epochs=int(self.epochs), decay_epochs=int(self.decay_epochs), batch_size=int(self.batch_size),
            lr=float(self.lr), beta_1=float(self.beta_1), load_size=int(self.load_size), dropout=float(self.dropout),
            policy=policy, seed=int(self.seed), deterministic=bool(self.deterministic), resume=bool(self.resume),
            progress=bool(self.progress),
        )  # fmt: skip
        return record


def fit_run(data_root, out_dir, callbacks=(), **options):
    """`fit(RunConfig(data_root, out_dir, **options))`."""
    return fit(RunConfig(data_root, out_dir, **options), callbacks=callbacks)


def fit(config, callbacks=()):
    """Trains, checkpointing every epoch into the run folder (`RunFolder`), and returns the summary
    also written to run.json. Under MultiWorkerMirrored only the chief writes. The run folder is
    locked throughout (`RunFolder.locked`): another process training into it raises `InUseError`."""
    strategy, strategy_name = make_strategy(config.strategy)  # first: MultiWorkerMirrored needs a fresh runtime
    weights = [config.backbone_weights] if config.backbone_weights not in NAMED_WEIGHTS else []
    check_outside_inputs(config.out_dir, config.data_root, weights)  # before the lock creates anything
    is_chief = worker_role(strategy_name)[0]
    folder = RunFolder(config.out_dir, writes=is_chief)
    with folder.locked():
        return _fit(config, callbacks, strategy, strategy_name, is_chief, folder)


def check_outside_inputs(out_dir, data_root, inputs=(), argument="out_dir"):
    """Refuses (`InputError`) an output folder that is, holds or lies inside the dataset at
    `data_root` (through links too), or is or holds one of `inputs`: writing there would change
    what the command reads. `argument`: the name the caller's user gave `out_dir` by."""
    check_output(out_dir, [data_root, *inputs], overwrite=True, kind="folder")
    dataset = resolve_root(data_root).resolve()
    if dataset in pathlib.Path(out_dir).resolve().parents:
        raise InputError(
            f"Refusing to write {out_dir}: it is inside the dataset {data_root} ({dataset}), which this command reads; "
            f"choose an {argument}= outside it"
        )


def _fit(config, callbacks, strategy, strategy_name, is_chief, folder):
    """`fit` once the run folder is locked."""
    log = print if config.progress else (lambda *_: None)
    train_records = list_twoafc(config.data_root, "train", config.subsets)
    val_records = list_twoafc(config.data_root, "val", config.val_subsets)
    drop_remainder = strategy_name == "tpu"  # TPUs need fixed shapes
    batch_size = int(config.batch_size)
    steps_per_epoch = len(train_records) // batch_size if drop_remainder else math.ceil(len(train_records) / batch_size)
    if steps_per_epoch < 1:
        raise InputError(f"{len(train_records)} training triplets make no full batch of {batch_size}")
    policy = resolve_precision(config.mixed_precision, strategy)
    record = config.record(train_records, val_records, policy)
    previous = folder.open(record, config.resume)
    if config.resume and folder.fresh:
        note(f"nothing to resume in {folder.path} (no run there): starting a new run")

    keras.utils.set_random_seed(int(config.seed))
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    schedule = EpochLinearDecay(config.lr, steps_per_epoch, config.epochs, config.decay_epochs)
    frozen_ok = config.precompute_frozen and config.mode == "lin" and strategy_name in ("default", "one-device")
    if is_chief:  # what the strategy changes, said: a single replica; lin mode without its precompute
        _strategy_note(strategy_name, strategy.num_replicas_in_sync, config.precompute_frozen and config.mode == "lin" and not frozen_ok)
    trainer = _build_trainer(config, policy, strategy, schedule, FrozenBackboneTrainer if frozen_ok else LPIPSTrainer)
    folder.check_disk_space(trainer)  # before any work: checkpoints and models against the free disk
    frozen = validate = None  # validation scores the float32 model the run saves, whatever it trains in
    if frozen_ok:
        frozen = FrozenBackbone(
            trainer.lpips, train_records, val_records, config.data_root, batch_size, config.load_size, log,
            val_metric=None if policy == "float32" else float32_copy(trainer.lpips, dropout=0.0),
            bar=config.progress and sys.stdout.isatty(),
        )  # fmt: skip

    checkpoint = folder.load_checkpoint(trainer) if config.resume else None
    initial_epoch = checkpoint["epoch"] if checkpoint else 0
    rows = list(checkpoint["history"]) if checkpoint else []
    initial = (checkpoint or {}).get("initial") or previous.get("initial")
    remaining = initial_epoch < config.total_epochs
    val_data = None
    if initial is None or remaining:
        val_data = frozen.validation_data(drop_remainder) if frozen else _images(val_records, config, drop_remainder, train=False)
        if not frozen and policy != "float32":
            validate = Float32Validation(trainer, val_data, strategy)
    started = time.time()
    if initial is None:  # the untrained model's score, epoch 0 of the curves
        initial = _untrained_scores(trainer, val_data, val_records, config.data_root, log, validate)
    started_at = previous.get("started", now())
    folder.write_record({**previous, "config": record, "initial": initial, "started": started_at})

    if remaining:
        orders = [_epoch_order(len(train_records), config.seed, e) for e in range(initial_epoch, config.total_epochs)]
        if frozen and not frozen.trains_on_images:
            train_data = frozen.training_data(orders, drop_remainder)
        else:  # one dataset per epoch, so that each epoch ends with its own (partial) batch
            train_data = concatenated([_images([train_records[i] for i in order], config, drop_remainder, train=True) for order in orders])
        extra = _tensorboard(folder) if is_chief else []
        with naming_bad_images(train_records + val_records, config.data_root):
            trainer.fit(
                train_data, epochs=config.total_epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                validation_data=val_data if validate is None else None, verbose=(1 if sys.stdout.isatty() else 2) if config.progress else 0,
                callbacks=[folder.epoch_recorder(rows, initial, schedule, len(train_records), validate), *extra, *callbacks],
                shuffle=False,
            )  # fmt: skip
    else:
        log(f"{folder.path}: all {config.total_epochs} epochs already done")
    if not is_chief:
        return {"config": record, "history": rows, "initial": initial, "chief": False}

    saved = folder.saved_trainer(trainer)
    if frozen:  # the float32 backbone's outputs, with the saved metric's trained weights
        d0, d1 = frozen.validation_distances(saved.lpips)
    else:
        d0, d1 = _validation_distances(saved.lpips, val_records, config)
    folder.save_validation_distances(d0, d1)
    judge = np.array([r.judge for r in val_records], np.float32)
    final = scores_by_subset(twoafc_scores(d0, d1, judge), [r.subset for r in val_records])
    folder.write_history(rows)
    folder.plot_history(rows, initial)
    folder.save_models(saved, frozen_backbone=not trainer.train_backbone)  # model.keras last: the run is finished
    summary = {
        "config": record, "strategy": strategy_name, "replicas": int(strategy.num_replicas_in_sync), "initial": initial,
        "final": {"val_2afc": final.pop("all"), "val_2afc_mean": final.pop("mean"), "val_2afc_by_subset": final},
        "last_epoch": rows[-1] if rows else None,
        "epochs_done": len(rows), "triplets_per_second": _steady_speed(rows),
        "seconds_this_session": round(time.time() - started, 1), "files": folder.files(),
    }  # fmt: skip
    folder.write_record({**summary, "started": started_at})
    return summary


def _build_trainer(config, policy, strategy, schedule, trainer_class):
    """The metric (dropout before its heads, linear weights from `lin_init`), the ranker and the
    optimiser, created under `strategy` and the mixed-precision `policy`."""
    saved_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        with strategy.scope():
            backbone_weights = None if config.backbone_weights == UNTRAINED else config.backbone_weights
            metric = LPIPS(
                net=config.backbone, version="0.1", distance=config.distance, layers=config.layers,
                backbone_weights=backbone_weights, lin_weights=None, input_range=INPUT_RANGE, seed=config.seed,
                dropout=config.dropout,
            )  # fmt: skip
            if config.lin_init == "reference":
                reference_lin_init(metric, config.seed)
            trainer = trainer_class(metric, DistanceToLogit(seed=config.seed), train_backbone=config.mode != "lin")
            optimizer = reference_adam(schedule, config.beta_1)
            if policy == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            trainer.compile(optimizer=optimizer)
            optimizer.build(trainer.trainable_variables)
    finally:
        keras.config.set_dtype_policy(saved_policy)
    return trainer


def _images(records, config, drop_remainder, train):
    """The triplets `records` as batches of images read from their files, in the order given."""
    return twoafc_dataset(
        records, batch_size=int(config.batch_size), load_size=int(config.load_size), input_range=INPUT_RANGE,
        shuffle=False, seed=int(config.seed), cache=False if train else config.cache,
        deterministic=bool(config.deterministic), drop_remainder=drop_remainder,
    )  # fmt: skip


def _untrained_scores(trainer, val_data, val_records, data_root, log, validate=None):
    """{"val_loss", "val_2afc"} of the model before training: epoch 0 of the curves (`validate`'s,
    where given: `Float32Validation`)."""
    with naming_bad_images(val_records, data_root):
        if validate is not None:
            initial = validate(trainer)
        else:
            scores = trainer.evaluate(val_data, verbose=0, return_dict=True)
            initial = {"val_loss": float(scores["loss"]), "val_2afc": float(scores["2afc"])}
    log(f"untrained: val_2afc {initial['val_2afc']:.4f}, val_loss {initial['val_loss']:.4f}")
    return initial


def _strategy_note(strategy_name, replicas, precompute_off):
    """The note, where it applies, that a distribution strategy runs a single replica (one device
    here), and that lin mode's frozen-backbone precompute is off under it (`precompute_off`)."""
    single = strategy_name not in ("default", "one-device") and replicas == 1
    if not (single or precompute_off):
        return
    text = f"strategy {strategy_name}: {replicas} replica{'' if replicas == 1 else 's'}"
    text += " (this machine offers it one device)" if single else ""
    if precompute_off:
        text += (
            "; lin mode's frozen-backbone precompute is off under it (the backbone runs at every step; "
            "strategy auto on one device, or one-device, keeps it)"
        )
    note(text)


def _epoch_order(count, seed, epoch):
    """Epoch `epoch`'s order of `count` training triplets: a permutation drawn from (seed, epoch)
    alone, so a resumed run sees the same order as an uninterrupted one."""
    return np.random.default_rng([int(seed), 1, int(epoch)]).permutation(count)


def _validation_distances(metric, val_records, config):
    """(d0, d1) of the trained `metric` on the validation triplets, read from their files."""
    with naming_bad_images(val_records, config.data_root):
        arrays = frozen_twoafc_arrays(metric, val_records, batch_size=int(config.batch_size), load_size=int(config.load_size))
    return arrays["d0"], arrays["d1"]


def _steady_speed(rows):
    """The median triplets/s over the epochs after the first (which compiles), or over all."""
    steady = [r["triplets_per_second"] for r in rows[1:]] or [r["triplets_per_second"] for r in rows]
    return float(np.median(steady)) if steady else None


def _tensorboard(folder):
    """The TensorBoard callback writing to the run folder's logs/, where the tensorboard package
    is installed (tf.summary writes event files only with it); else none, said once."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        note("the tensorboard package is not installed; no TensorBoard logs")
        return []
    return [keras.callbacks.TensorBoard(log_dir=str(folder.path / "logs"), write_graph=False)]
