"""The `keras-lpips` program: one Typer app, one place that turns errors into messages."""

import re
import sys
from typing import Annotated

import typer
from keras_lpips.cli import beam, data, embedding, export, folders, quiet_import, score, study, train, weights

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


# The library's messages name its Python arguments (`backbone_weights=PATH`); the program's
# name its flags. Argument -> flag, where they differ in more than `_` / `-`.
FLAGS = {"version": "--lpips-version"}
ARGUMENTS = ("backbone_weights", "lin_weights", "net", "version", "distance", "layers")
_ARGUMENT = re.compile(rf"(?<![\w.-])({'|'.join(ARGUMENTS)})=(None\b)?")


def cli_spelling(message):
    """`message` with `argument=VALUE` written as the flag, `--argument VALUE` (None: none)."""

    def flag(match):
        name = match.group(1)
        return FLAGS.get(name, "--" + name.replace("_", "-")) + (" none" if match.group(2) else " ")

    return _ARGUMENT.sub(flag, message)


def main():
    """Entry point: runs the app; every user error becomes one line on stderr and an exit code:
    2 for usage errors (Click's, and `InputError`), 1 for failures at run time (the error's
    `exit_code`, see `keras_lpips.errors`), 130 for Ctrl-C."""
    quiet_import.install()  # TensorFlow, if a command imports it, without its C++ start-up lines
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
            # one line (Click lists the choices of a missing option on several), without Typer's "Value error, "
            message = " ".join(error.format_message().split()).replace(": Value error, ", ": ")
            typer.echo(f"error: {message}{where}", err=True)
        sys.exit(error.exit_code)
    except KerasLPIPSError as error:
        typer.echo(f"error: {cli_spelling(str(error))}", err=True)
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as error:  # a full disk no writer reported as a DiskFullError: one line all the same
        from keras_lpips.disk_space import disk_full_error, disk_full_reason

        reason = disk_full_reason(error)
        if reason is None:
            raise
        path = getattr(error, "filename", None)
        typer.echo(f"error: {disk_full_error(path, reason=reason) if path else reason + ' while writing'}", err=True)
        sys.exit(1)
    if code == 130:  # Typer turns Ctrl-C during a command into this exit code, without a word
        typer.echo("interrupted", err=True)
    sys.exit(code if isinstance(code, int) else 0)  # --help gives its code, a command None
