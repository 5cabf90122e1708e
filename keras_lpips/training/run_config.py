"""`RunConfig`: everything one training run is configured by, checked when it is made (before
`fit` creates or reads anything) and recorded in the run's run.json."""

import dataclasses
import math
import pathlib

from keras_lpips.argument_checks import check_batch_size, check_integer, check_load_size, check_seed, is_number
from keras_lpips.backbones import get_backbone
from keras_lpips.data.bapps import fingerprint
from keras_lpips.errors import InputError
from keras_lpips.metric_arguments import check_choices
from keras_lpips.training.devices import PRECISIONS, STRATEGIES
from keras_lpips.training.run_folder import recorded_weights
from keras_lpips.weights.loading import check_backbone_weights_net
from keras_lpips.weights.sources import IMAGENET, RANDOM, untrained

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
