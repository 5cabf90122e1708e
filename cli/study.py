"""`keras-lpips study`: the seed study's five configurations, trained, compared and plotted."""

from pathlib import Path
from typing import Annotated, Optional

import typer

HELP = """Train and compare the study's five configurations on 2AFC data.

VGG16 (2 layers) and AlexNet (4 layers) with cosine and with LPIPS, and an untrained
VGG16 with cosine, beside the official LPIPS v0.1 models and the L2/SSIM/PSNR baselines;
writes results.md/json, results.png, curves.png and summary.md (which of the study's
findings held, with paired standard errors). A rerun skips finished configurations and
resumes an unfinished one, where they were started with the same data and settings (a run
folder of --out holding one started with others is refused before anything trains).
--data is the dataset root (holding 2afc/ and jnd/, as `keras-lpips data download --dest`
or `data synth --out` writes it) or its 2afc/ folder.

  keras-lpips data synth --out synth --train 1000 --val 1000 --jnd 500 --seed 0
  keras-lpips study --data synth --out study
  keras-lpips study --data dataset --out study-bapps --config study.toml
"""


def study(
    data: Annotated[Path, typer.Option("--data", help="BAPPS-layout folder (2afc/, optionally jnd/).")],
    out: Annotated[Path, typer.Option("--out", help="Study folder (runs/, results.*).")],
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML adding rows, seeds and \\[train] options.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A tiny version (1+1 epochs, batch 8) for smoke tests.")] = False,
):
    from keras_lpips.data.bapps import resolve_root
    from keras_lpips.files import check_output

    resolve_root(data)  # usage errors said before TensorFlow is imported
    check_output(out, [data, config], overwrite=True, kind="folder")  # a study folder resumes; it never holds its inputs
    from keras_lpips.study import run_study
    from keras_lpips.study_config import load_config

    settings = load_config(config)
    results = run_study(
        data, out, settings["configs"], settings["seeds"], quick=quick, train=settings["train"],
        log=lambda line: typer.echo(line, err=True),
    )  # fmt: skip
    typer.echo((out / "results.md").read_text())
    typer.echo((out / "summary.md").read_text())
    return results
