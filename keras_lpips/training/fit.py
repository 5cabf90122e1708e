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

from keras_lpips.data.bapps import list_twoafc, resolve_root
from keras_lpips.data.pipeline import naming_bad_images, twoafc_dataset
from keras_lpips.errors import InputError, note
from keras_lpips.files import check_output
from keras_lpips.model import LPIPS
from keras_lpips.ranking import DistanceToLogit, scores_by_subset, twoafc_scores
from keras_lpips.training.devices import make_strategy, resolve_precision, worker_role
from keras_lpips.training.frozen import FrozenBackbone, FrozenBackboneTrainer, concatenated, frozen_twoafc_arrays
from keras_lpips.training.optimizer import EpochLinearDecay, reference_adam, reference_lin_init
from keras_lpips.training.precision import Float32Validation, float32_copy
from keras_lpips.training.run_config import INPUT_RANGE, RunConfig
from keras_lpips.training.run_folder import RunFolder, now
from keras_lpips.training.trainer import LPIPSTrainer
from keras_lpips.weights.sources import is_weight_name, untrained


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
