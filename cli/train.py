"""`keras-lpips fit` and `keras-lpips eval`: learn LPIPS from BAPPS 2AFC judgments, and score metrics on BAPPS."""

from pathlib import Path
from typing import Annotated, List, Literal, Optional

import typer

from keras_lpips.cli import options
from keras_lpips.reports import dumps
from keras_lpips.resolve import MetricSpec

FIT_HELP = """Train LPIPS on the 2AFC human judgments of a BAPPS-layout folder, as the reference trainer.

Modes: lin (backbone frozen, linear weights learn), tune (backbone learns too), scratch (random backbone, learns).

After every epoch the run folder gets a checkpoint and history.csv; a killed run continues with --resume (with the same settings and data: anything else is refused). At the end it holds model.keras (for score --model), trainer.keras, loss.png, accuracy.png, run.json, TensorBoard logs and, in lin mode only, lin_weights.npz (for --lin-weights, with the backbone weights the run used; tune and scratch runs trained their backbone too, so only model.keras holds their metric).

The learning rate (the reference's schedule): --lr for the --epochs epochs and the first of the N --decay-epochs, then lr/N lower each epoch, the last at lr/N.

  keras-lpips fit --data dataset --out runs/alex-lin

  keras-lpips fit --data dataset --out runs/vgg-tune --net vgg --mode tune

  keras-lpips fit --data dataset --out runs/alex-lin --resume

  keras-lpips fit --data synth --out runs/try --backbone-weights random --layers 3 --load-size 32 --epochs 2 --decay-epochs 0
"""

EVAL_HELP = """Score a metric on the BAPPS validation sets: 2AFC per subset and JND mAP, beside the reference's baselines (L2 and SSIM in Lab, PSNR). JND mAP where the dataset has jnd/val; a dataset with jnd/val only gets its JND mAP (2AFC is said to be skipped). --subsets restricts both: 2AFC and JND (BAPPS' JND has traditional and cnn) are scored on the subsets named.

The metric: the net options, a --preset, or --model with a fit run, a .keras file or a SavedModel from export (models/lpips below).

  keras-lpips eval --model runs/alex-lin --data dataset

  keras-lpips eval --net alex --data dataset --json

  keras-lpips eval --net vgg --lpips-version 0.0 --data dataset --output vgg-v0.0.md

  keras-lpips eval --preset squeeze-v0.1 --data dataset

  keras-lpips eval --model models/lpips --data dataset
"""

Data = Annotated[Path, typer.Option("--data", help="BAPPS-layout folder (with 2afc/ and jnd/).")]
Subsets = Annotated[
    Optional[List[str]], typer.Option("--subsets", help="Subsets to use, repeated or comma-separated (default: all present).")
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Triplets per (global) batch.")]
LoadSize = Annotated[int, typer.Option("--load-size", min=1, help="Resize patches to this size (BAPPS: 64).")]


def _split(values):
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def fit(
    data: Data,
    out: Annotated[Path, typer.Option("--out", help="Run folder: new or empty, or an earlier run's with --resume.")],
    backbone: Annotated[
        options.NetName, typer.Option("--net", "--backbone", case_sensitive=False, help="Backbone (alexnet, vgg16, squeezenet: aliases).")
    ] = "alex",
    distance: options.Distance = "lpips",
    layers: options.Layers = None,
    mode: Annotated[
        Literal["lin", "tune", "scratch"],
        typer.Option("--mode", help="lin: train the linear heads; tune: and the backbone; scratch: all from random."),
    ] = "lin",
    backbone_weights: Annotated[
        Optional[str],
        typer.Option(
            "--backbone-weights",
            help="imagenet, keras-imagenet (vgg), random, or a .pth/.npz/.safetensors state dict (default: imagenet; random for scratch).",
        ),
    ] = None,
    subsets: Subsets = None,
    val_subsets: Annotated[
        Optional[List[str]], typer.Option("--val-subsets", help="Validation subsets (default: all under 2afc/val).")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=0, help="Epochs at the full learning rate, before the decay epochs.")] = 5,
    decay_epochs: Annotated[
        int,
        typer.Option("--decay-epochs", min=0, help="N further epochs: the first still at the full rate, then each lr/N lower (the last at lr/N)."),
    ] = 5,
    batch_size: BatchSize = 50,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (beta1 0.5, as the reference).")] = 1e-4,
    load_size: LoadSize = 64,
    lin_init: Annotated[
        Literal["reference", "ones"], typer.Option("--lin-init", help="reference (torch's random init, as the reference) or ones (start from cosine).")
    ] = "reference",
    mixed_precision: Annotated[
        Literal["auto", "off", "bf16", "fp16"], typer.Option("--mixed-precision", help="auto (fp16 on GPU, bf16 on CPUs with native bf16), off, bf16 or fp16. Validation and the saved model are float32.")
    ] = "auto",
    strategy: Annotated[
        Literal["auto", "one-device", "mirrored", "multiworker", "tpu"], typer.Option("--strategy", help="auto, one-device, mirrored, multiworker (TF_CONFIG) or tpu.")
    ] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last finished epoch (none there: a new run starts, with a note).")] = False,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of initialisation, epoch order and dropout.")] = 0,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Bit-reproducible (slower) ops and data order.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
):
    from keras_lpips.data.bapps import resolve_root

    resolve_root(data)  # a usage error said before TensorFlow is imported
    from keras_lpips.training import fit_run

    summary = fit_run(
        data, out, backbone=backbone, distance=distance, layers=layers, mode=mode, backbone_weights=backbone_weights,
        subsets=_split(subsets), val_subsets=_split(val_subsets), epochs=epochs, decay_epochs=decay_epochs,
        batch_size=batch_size, lr=lr, load_size=load_size, lin_init=lin_init, mixed_precision=mixed_precision,
        strategy=strategy, resume=resume, seed=seed, deterministic=deterministic, progress=not quiet,
    )  # fmt: skip
    if summary.get("chief", True):
        typer.echo(_final_score_line(summary))
        typer.echo(f"run written to {out}: {', '.join(summary['files'])}")


def _final_score_line(summary):
    """The trained model's val 2AFC, over all triplets as the epochs' val_2afc (and untrained's),
    and, with several subsets, their mean as `eval` heads its table, then each subset's."""
    final, untrained = summary["final"], summary["initial"]["val_2afc"]
    by_subset = ", ".join(f"{k} {v:.4f}" for k, v in final["val_2afc_by_subset"].items())
    if len(final["val_2afc_by_subset"]) == 1:
        return f"val 2AFC {final['val_2afc']:.4f} ({by_subset}); untrained {untrained:.4f}"
    return (f"val 2AFC over all triplets {final['val_2afc']:.4f} (untrained {untrained:.4f}); "
            f"mean of subsets {final['val_2afc_mean']:.4f} ({by_subset})")


@options.metric_options
def eval_(
    data: Data,
    metric: MetricSpec,
    subsets: Annotated[
        Optional[List[str]],
        typer.Option(
            "--subsets",
            help="Subsets to score, repeated or comma-separated (default: all present): 2AFC must have each, "
            "JND is scored on those it has (skipped, with a note, where it has none).",
        ),
    ] = None,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="Also score L2, SSIM and PSNR.")] = True,
    batch_size: BatchSize = 50,
    load_size: Annotated[
        Optional[int], typer.Option("--load-size", min=1, help="Resize patches to this size (default: the run's, else 64).")
    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", help="Also write the results (.json: JSON, else markdown).")] = None,
    overwrite: options.Overwrite = False,
    as_json: options.Json = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
):
    from keras_lpips.data.bapps import resolve_root
    from keras_lpips.files import check_output

    resolve_root(data)  # usage errors said before TensorFlow is imported
    if output is not None:
        check_output(output, [data, *metric.input_paths()], overwrite, kind="file")
    from keras_lpips.evaluation import evaluate_run
    from keras_lpips.reports import results_markdown, write_results

    results = evaluate_run(
        data, model=metric.model, metric=options.resolve(metric), subsets=_split(subsets), baselines=baselines,
        batch_size=batch_size, load_size=load_size, progress=not quiet and not as_json,
    )  # fmt: skip
    if output is not None:
        write_results(results, output, overwrite=overwrite)
    for skipped in results.get("skipped", ()):
        typer.echo(f"note: skipped {skipped}", err=True)
    typer.echo(dumps(results) if as_json else results_markdown(results).rstrip("\n"))
