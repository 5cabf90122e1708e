"""The `keras-lpips` program: one Typer app, one place that turns errors into messages."""

import os
import sys

import typer

from keras_lpips.cli import data, embedding, export, folders, score, study, train, weights

app = typer.Typer(
    help="LPIPS perceptual distances with TensorFlow/Keras, identical to the reference lpips.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(help=score.HELP)(score.score)
app.command(help=folders.PAIRS_HELP)(folders.pairs)
app.command(help=folders.MATRIX_HELP)(folders.matrix)
app.command(help=embedding.EMBED_HELP)(embedding.embed)
app.command(help=embedding.NEAREST_HELP)(embedding.nearest)
app.command(help=embedding.DIVERSITY_HELP)(embedding.diversity)
app.command(help=export.HELP)(export.export)
app.command("fit", help=train.FIT_HELP)(train.fit)
app.command("eval", help=train.EVAL_HELP)(train.eval_)
app.command(help=study.HELP)(study.study)
app.add_typer(data.app, name="data")
app.add_typer(weights.app, name="weights")


def _import_tensorflow_quietly():
    """Imports TensorFlow with file descriptor 2 muted: its C++ start-up lines
    (CUDA probing on CPU machines) ignore TF_CPP_MIN_LOG_LEVEL."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main():
    """Entry point: runs the app; user errors (bad arguments or options included) become one
    line on stderr and exit code 2."""
    if len(sys.argv) > 1 and not {"--help", "-h"} & set(sys.argv):
        _import_tensorflow_quietly()
    from typer.exceptions import TyperException

    from keras_lpips.errors import KerasLPIPSError

    try:
        code = typer.main.get_command(app).main(prog_name="keras-lpips", standalone_mode=False)
    except TyperException as error:  # Typer's (Click's) usage errors: a missing argument, an unknown option
        context = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError":  # a command group without a command: its help
            error.show()
        else:
            where = f" (see {context.command_path} --help)" if context is not None else ""
            typer.echo(f"error: {error.format_message()}{where}", err=True)
        sys.exit(error.exit_code)
    except KerasLPIPSError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)  # --help gives its code, a command None
