"""The `keras-lpips` program: one Typer app, one place that turns errors into messages."""

import os
import signal
import sys
import traceback
from typing import Annotated

import typer
from keras_lpips.cli import (
    beam, data, embedding, export, folders, help_format, options, quiet_import, score, study, train, weights,
)
from keras_lpips.cli.messages import cli_spelling, notes_as_lines, system_refusal
from keras_lpips.cli.signals import Terminated, stopping_on_signals

help_format.install()

app = typer.Typer(
    help="LPIPS perceptual distances with TensorFlow/Keras, identical to the reference lpips.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
)


def _print_version(value):
    if value:
        from keras_lpips import __version__

        typer.echo(f"keras-lpips {__version__}")
        raise typer.Exit()


@app.callback()
def _program(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the program's version and exit.")
    ] = False,
):
    """The program-wide options: only --version, handled by its callback."""


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
app.add_typer(beam.app, name="beam")


def run():
    """The installed command (`keras-lpips`, `python -m keras_lpips`): `main`, and where it ends
    in a failure or an interrupt, the process ends at once once its output is flushed. Python's
    own teardown can hang there for good, destroying a tf.data iterator that a stopped `fit`
    left running (2 Ctrl-Cs in 4, seen in TensorFlow's MapAndBatch iterator destructor); what
    had to be cleaned up (partial files, locks) was cleaned while the error unwound."""
    try:
        main()
        return
    except SystemExit as ending:
        if ending.code in (0, None):
            raise
        code = ending.code if isinstance(ending.code, int) else 1
    except BaseException:  # a bug: its traceback, then the same ending
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main():
    """Entry point: runs the app; every user error becomes one line on stderr and an exit code:
    2 for usage errors (Click's, and `InputError`), 1 for failures at run time (the error's
    `exit_code`, see `keras_lpips.errors`, and what the system refused: a full disk, a file it
    cannot read or write), 130 for Ctrl-C, 143 for SIGTERM."""
    quiet_import.install()  # TensorFlow, if a command imports it, without its C++ start-up lines
    from typer.exceptions import TyperException

    from keras_lpips.errors import KerasLPIPSError

    received = None
    try:
        with stopping_on_signals() as received, notes_as_lines():
            code = typer.main.get_command(app).main(prog_name="keras-lpips", standalone_mode=False)
    except TyperException as error:  # Typer's (Click's) usage errors: a missing argument, an unknown option
        context = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError":  # a command group without a command: its help
            error.show()
        else:
            where = f" (see {context.command_path} --help)" if context is not None else ""
            # one line (Click lists the choices of a missing option on several), without Typer's "Value error, "
            message = " ".join(error.format_message().split()).replace(": Value error, ", ": ")
            typer.echo(f"error: {options.one_line(message)}{where}", err=True)
        sys.exit(error.exit_code)
    except KerasLPIPSError as error:
        typer.echo(f"error: {options.one_line(cli_spelling(str(error)))}", err=True)
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Terminated:
        typer.echo("terminated", err=True)
        sys.exit(143)
    except Exception as error:
        if received is not None and received.signum is not None:  # the signal surfaced as another error
            stopped_by_term = received.signum == signal.SIGTERM
            typer.echo("terminated" if stopped_by_term else "interrupted", err=True)
            sys.exit(143 if stopped_by_term else 130)
        message = system_refusal(error)
        if message is None:
            raise
        typer.echo(f"error: {options.one_line(message)}", err=True)
        sys.exit(1)
    if code == 130:  # Typer turns Ctrl-C during a command into this exit code, without a word
        typer.echo("interrupted", err=True)
    sys.exit(code if isinstance(code, int) else 0)  # --help gives its code, a command None
