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

from keras_lpips.argument_checks import check_batch_size, check_integer, check_load_size, check_seed, is_number
from keras_lpips.backbones import get_backbone
from keras_lpips.data.bapps import fingerprint, list_twoafc, resolve_root
from keras_lpips.data.pipeline import naming_bad_images, twoafc_dataset
from keras_lpips.errors import InputError, note
from keras_lpips.files import check_output
from keras_lpips.metric_arguments import check_choices
from keras_lpips.model import LPIPS
from keras_lpips.ranking import DistanceToLogit, scores_by_subset, twoafc_scores
from keras_lpips.training.devices import PRECISIONS, STRATEGIES, make_strategy, resolve_precision, worker_role
from keras_lpips.training.frozen import FrozenBackbone, FrozenBackboneTrainer, concatenated, frozen_twoafc_arrays
from keras_lpips.training.optimizer import EpochLinearDecay, reference_adam, reference_lin_init
from keras_lpips.training.precision import Float32Validation, float32_copy
from keras_lpips.training.run_folder import RunFolder, now, recorded_weights
from keras_lpips.training.trainer import LPIPSTrainer
from keras_lpips.weights.loading import check_backbone_weights_net
from keras_lpips.weights.sources import IMAGENET, RANDOM, is_weight_name, untrained

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
        backbone_weights: "imagenet", "keras-imagenet" (vgg only), "random" or "none" (untrained;
            recorded as "random"), or a torchvision-layout `.pth`, `.npz` or `.safetensors`;
            None: "imagenet", or "random" in "scratch" mode (which refuses anything else).
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
                raise InputError(f"{name} must be one of {', '.join(choices)}. Received: {name}={getattr(self, name)!r}")
        if self.distance == "cosine" and self.mode != "lin":
            raise InputError("distance 'cosine' has no linear weights: only the ranking head learns, so mode must be 'lin'")
        if untrained(self.backbone_weights):  # "none" is "random", recorded as that
            self.backbone_weights = RANDOM
        if self.mode == "scratch" and self.backbone_weights not in (None, RANDOM):
            raise InputError(f"mode 'scratch' trains the backbone from a random init; drop backbone_weights={self.backbone_weights!r}")
        self._check_numbers()
        self.backbone_weights = self.backbone_weights or (RANDOM if self.mode == "scratch" else IMAGENET)
        spec = get_backbone(self.backbone)
        check_backbone_weights_net(self.backbone_weights, self.backbone, argument="backbone")  # as LPIPS refuses it
        kept = check_choices(spec, "0.1", self.distance, self.layers, INPUT_RANGE)
        check_load_size(self.load_size, spec.min_input_size[kept - 1], spec.name, kept)
        self.subsets, self.val_subsets = self._subset_list("subsets", self.subsets), self._subset_list("val_subsets", self.val_subsets)

    def _check_numbers(self):
        """`InputError` for a numeric option out of its range: zero, negative, NaN, infinite, a bool."""
        for name in ("epochs", "decay_epochs"):
            check_integer(name, getattr(self, name), 0)
        check_seed(self.seed)
        if self.epochs + self.decay_epochs < 1:
            raise InputError("nothing to train: epochs + decay_epochs must be at least 1")
        check_batch_size(self.batch_size)
        check_load_size(self.load_size)  # its least for the backbone once that is known (`__post_init__`)
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
    weights = [] if is_weight_name("backbone_weights", config.backbone_weights) else [config.backbone_weights]
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
    """`fit` once the run folder is locked: plan the run, build its trainer, take it up where it
    stands, train the epochs left, then (the chief) score and save what it learned."""
    run = _plan(config, strategy, strategy_name, is_chief, folder)
    trainer, frozen, schedule = _build(run)
    state = _take_up(run, trainer, frozen)
    if state.initial_epoch < config.total_epochs:
        _train(run, trainer, frozen, schedule, state, callbacks)
    else:
        run.log(f"{folder.path}: all {config.total_epochs} epochs already done")
    if not is_chief:
        return {"config": run.record, "history": state.rows, "initial": state.initial, "chief": False}
    return _finish(run, trainer, frozen, state)


@dataclasses.dataclass(frozen=True)
class _Run:
    """One run as planned before anything is built: its configuration and folder, where it runs
    (`strategy`, whether this worker is the chief), its triplets, steps per epoch and precision
    policy, the record run.json keeps of it, and the run.json it resumes ({} for a new run)."""

    config: RunConfig
    folder: RunFolder
    strategy: object
    strategy_name: str
    is_chief: bool
    log: object
    train_records: list
    val_records: list
    drop_remainder: bool
    steps_per_epoch: int
    policy: str
    record: dict
    previous: dict


@dataclasses.dataclass
class _State:
    """Where a run stands as this call takes it up: the epochs done (`initial_epoch`; `rows`, their
    history), the untrained model's scores (`initial`), the validation data (None where nothing is
    left to validate) and its `Float32Validation` (None where Keras validates), and when this call
    (`started`, a time) and the run (`started_at`, a date) started."""

    initial_epoch: int
    rows: list
    initial: dict
    val_data: object
    validate: object
    started: float
    started_at: str


def _plan(config, strategy, strategy_name, is_chief, folder):
    """The `_Run`: the triplets listed, the steps per epoch (`InputError` for none), the policy
    resolved and the folder opened with the run's record (refused where a resumed run differs)."""
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
    log = print if config.progress else (lambda *_: None)
    return _Run(
        config, folder, strategy, strategy_name, is_chief, log, train_records, val_records, drop_remainder,
        steps_per_epoch, policy, record, previous,
    )  # fmt: skip


def _build(run):
    """(trainer, frozen, schedule), seeded: the trainer (`_build_trainer`; its files checked
    against the free disk), lin mode's `FrozenBackbone` where it applies (else None), and the
    learning-rate schedule."""
    config = run.config
    keras.utils.set_random_seed(int(config.seed))
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    schedule = EpochLinearDecay(config.lr, run.steps_per_epoch, config.epochs, config.decay_epochs)
    frozen_ok = config.precompute_frozen and config.mode == "lin" and run.strategy_name in ("default", "one-device")
    if run.is_chief:  # what the strategy changes, said: a single replica; lin mode without its precompute
        _strategy_note(run.strategy_name, run.strategy.num_replicas_in_sync, config.precompute_frozen and config.mode == "lin" and not frozen_ok)
    trainer = _build_trainer(config, run.policy, run.strategy, schedule, FrozenBackboneTrainer if frozen_ok else LPIPSTrainer)
    run.folder.check_disk_space(trainer)  # before any work: checkpoints and models against the free disk
    frozen = None
    if frozen_ok:  # validation scores the float32 model the run saves, whatever it trains in
        frozen = FrozenBackbone(
            trainer.lpips, run.train_records, run.val_records, config.data_root, int(config.batch_size), config.load_size,
            run.log, val_metric=None if run.policy == "float32" else float32_copy(trainer.lpips, dropout=0.0),
            bar=config.progress and sys.stdout.isatty(),
        )  # fmt: skip
    return trainer, frozen, schedule


def _take_up(run, trainer, frozen):
    """The `_State` of the run: its last checkpoint restored into `trainer` (resuming), the
    untrained model's scores (the record's, or computed now: epoch 0 of the curves), and run.json
    written with them."""
    config = run.config
    checkpoint = run.folder.load_checkpoint(trainer) if config.resume else None
    initial_epoch = checkpoint["epoch"] if checkpoint else 0
    rows = list(checkpoint["history"]) if checkpoint else []
    initial = (checkpoint or {}).get("initial") or run.previous.get("initial")
    val_data = validate = None
    if initial is None or initial_epoch < config.total_epochs:
        val_data, validate = _validation(run, trainer, frozen)
    started = time.time()
    if initial is None:  # the untrained model's score, epoch 0 of the curves
        initial = _untrained_scores(trainer, val_data, run.val_records, config.data_root, run.log, validate)
    started_at = run.previous.get("started", now())
    run.folder.write_record({**run.previous, "config": run.record, "initial": initial, "started": started_at})
    return _State(initial_epoch, rows, initial, val_data, validate, started, started_at)


def _validation(run, trainer, frozen):
    """(validation data, `Float32Validation` or None): the frozen backbone's outputs, or the
    images; under a mixed policy the images are validated on the float32 model the run saves."""
    if frozen:
        return frozen.validation_data(run.drop_remainder), None
    val_data = _images(run.val_records, run.config, run.drop_remainder, train=False)
    return val_data, None if run.policy == "float32" else Float32Validation(trainer, val_data, run.strategy)


def _train(run, trainer, frozen, schedule, state, callbacks):
    """Trains the epochs left, each in its own order (`_epoch_order`), checkpointing every one
    (`RunFolder.epoch_recorder`)."""
    config = run.config
    orders = [_epoch_order(len(run.train_records), config.seed, e) for e in range(state.initial_epoch, config.total_epochs)]
    if frozen and not frozen.trains_on_images:
        train_data = frozen.training_data(orders, run.drop_remainder)
    else:  # one dataset per epoch, so that each epoch ends with its own (partial) batch
        epochs = [_images([run.train_records[i] for i in order], config, run.drop_remainder, train=True) for order in orders]
        train_data = concatenated(epochs)
    extra = _tensorboard(run.folder) if run.is_chief else []
    recorder = run.folder.epoch_recorder(state.rows, state.initial, schedule, len(run.train_records), state.validate)
    with naming_bad_images(run.train_records + run.val_records, config.data_root):
        trainer.fit(
            train_data, epochs=config.total_epochs, initial_epoch=state.initial_epoch, steps_per_epoch=run.steps_per_epoch,
            validation_data=state.val_data if state.validate is None else None,
            verbose=(1 if sys.stdout.isatty() else 2) if config.progress else 0,
            callbacks=[recorder, *extra, *callbacks], shuffle=False,
        )  # fmt: skip


def _finish(run, trainer, frozen, state):
    """The chief's end of the run: the trained model scored on the validation triplets, the
    history, plots and models saved, and the summary returned and written to run.json."""
    folder = run.folder
    saved = folder.saved_trainer(trainer)
    final = _final_scores(run, saved.lpips, frozen)
    folder.write_history(state.rows)
    folder.plot_history(state.rows, state.initial)
    folder.save_models(saved, frozen_backbone=not trainer.train_backbone)  # model.keras last: the run is finished
    summary = {
        "config": run.record, "strategy": run.strategy_name, "replicas": int(run.strategy.num_replicas_in_sync),
        "initial": state.initial,
        "final": {"val_2afc": final.pop("all"), "val_2afc_mean": final.pop("mean"), "val_2afc_by_subset": final},
        "last_epoch": state.rows[-1] if state.rows else None,
        "epochs_done": len(state.rows), "triplets_per_second": _steady_speed(state.rows),
        "seconds_this_session": round(time.time() - state.started, 1), "files": folder.files(),
    }  # fmt: skip
    folder.write_record({**summary, "started": state.started_at})
    return summary


def _final_scores(run, metric, frozen):
    """The 2AFC scores by subset (with "all" and "mean") of the trained float32 `metric` on the
    validation triplets, whose distances are saved (val_distances.npz)."""
    if frozen:  # the float32 backbone's outputs, with the saved metric's trained weights
        d0, d1 = frozen.validation_distances(metric)
    else:
        d0, d1 = _validation_distances(metric, run.val_records, run.config)
    run.folder.save_validation_distances(d0, d1)
    judge = np.array([r.judge for r in run.val_records], np.float32)
    return scores_by_subset(twoafc_scores(d0, d1, judge), [r.subset for r in run.val_records])


def _build_trainer(config, policy, strategy, schedule, trainer_class):
    """The metric (dropout before its heads, linear weights from `lin_init`), the ranker and the
    optimiser, created under `strategy` and the mixed-precision `policy`."""
    saved_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        with strategy.scope():
            backbone_weights = None if untrained(config.backbone_weights) else config.backbone_weights
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
