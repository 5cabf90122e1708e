"""The `keras-lpips` program: one Typer app, one place that turns errors into messages."""

import _thread
import contextlib
import os
import re
import signal
import sys
import threading
import traceback
from typing import Annotated

import typer
from keras_lpips.cli import beam, data, embedding, export, folders, options, quiet_import, score, study, train, weights

app = typer.Typer(
    help="LPIPS perceptual distances with TensorFlow/Keras, identical to the reference lpips.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
)


def _flags_show_no_value():
    """--help lists a flag (`--json`, `--resize`, `-h`) without a value. Typer 0.29 shows a
    flag's type (`--json <bool>`) as if it took one (and `--resize true` would read `true` as an
    image): the one method that fills an option's type column in Typer's help then gives none
    for a flag, in every command and group. A Typer without that method is left as it is."""
    option = typer.core.TyperOption
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "flags_show_no_value", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag or self.count else shown(self, ctx)

    display_type_rich.flags_show_no_value = True
    option.display_type_rich = display_type_rich


_flags_show_no_value()


def _arguments_in_upper_case():
    """A positional argument shows as its name in upper case, as Click writes it (`REF A [B]`,
    `Missing argument 'REF'`), in usage lines, help and errors of every command. Typer 0.29 writes
    `{ref} {a} [b]`: its arguments' `display_name_raw` (the name without a metavar) and
    `_usage_display_name` (braces around a required one) are replaced. A Typer without them is
    left as it is."""
    argument = typer.core.TyperArgument
    if not hasattr(argument, "_usage_display_name") or getattr(argument, "upper_case", False):
        return

    def display_name_raw(self):
        return self.metavar if self.metavar is not None else self.name.upper()

    def usage_display_name(self):
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    argument.display_name_raw = property(display_name_raw)
    argument._usage_display_name = usage_display_name
    argument.upper_case = True


_arguments_in_upper_case()


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


# The library's messages name its Python arguments: with a value (`backbone_weights=PATH`,
# `resume=True`), or alone, as `net=` followed by a space, a comma, ";", ")" or the message's end
# ("drop net=, layers="); the program's name its flags. The arguments the program has a flag
# for, and argument -> flag where they differ in more than `_` / `-` (`fit`'s `out_dir`).
ARGUMENTS = (
    "backbone_weights", "lin_weights", "net", "version", "distance", "layers", "model", "preset",
    "out", "out_dir", "resume", "overwrite", "resize", "frame", "strategy", "load_size", "n_train", "n_val", "n_jnd",
)  # fmt: skip
FLAGS = {"version": "--lpips-version", "out_dir": "--out", "n_train": "--train", "n_val": "--val", "n_jnd": "--jnd"}
_ARGUMENT = re.compile(rf"(?<![\w./\\-])({'|'.join(ARGUMENTS)})=(None\b|True\b|(?=[\s,;)]|$))?")


# An argument that begins a message as a check's subject: "layers must be an integer ...".
_SUBJECT = re.compile(rf"^({'|'.join(ARGUMENTS)})(?= must )")


def _flag(name):
    """The flag of the library's argument `name`."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def cli_spelling(message):
    """`message` with its arguments written as flags: `argument=VALUE` as `--argument VALUE`
    (None: `--argument none`), `argument=True` and `argument=` alone as `--argument`, and an
    argument that begins the message before "must" ("layers must be ...") as `--argument`."""

    def flag(match):
        name, value = match.groups()
        if value is None:  # a value follows
            return _flag(name) + " "
        return _flag(name) + (" none" if value == "None" else "")

    message = _SUBJECT.sub(lambda match: _flag(match.group(1)), message)
    return _ARGUMENT.sub(flag, message)


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

    try:
        with _stopping_on_signals(), _notes_as_lines():
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
    except _Terminated:
        typer.echo("terminated", err=True)
        sys.exit(143)
    except Exception as error:
        message = _system_refusal(error)
        if message is None:
            raise
        typer.echo(f"error: {options.one_line(message)}", err=True)
        sys.exit(1)
    if code == 130:  # Typer turns Ctrl-C during a command into this exit code, without a word
        typer.echo("interrupted", err=True)
    sys.exit(code if isinstance(code, int) else 0)  # --help gives its code, a command None


class _Terminated(BaseException):
    """SIGTERM (`docker stop`, `timeout`, a scheduler), raised in the main thread as Ctrl-C is:
    the writers' cleanup runs, so nothing is left half-written."""


@contextlib.contextmanager
def _notes_as_lines():
    """The library's notes (`keras_lpips.errors.KerasLPIPSNote` warnings), each as a line `note:
    MESSAGE` on stderr when it is given; other warnings as Python shows them."""
    import warnings

    from keras_lpips.errors import KerasLPIPSNote

    with warnings.catch_warnings():
        warnings.simplefilter("always", KerasLPIPSNote)
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if issubclass(category, KerasLPIPSNote):
                typer.echo(f"note: {options.one_line(message)}", err=True)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


@contextlib.contextmanager
def _stopping_on_signals():
    """While the command runs (in the main thread; elsewhere signals are not Python's to handle):
    SIGTERM raises `_Terminated`, and a Ctrl-C or SIGTERM that lands in a callback Python cannot
    raise from (a `__del__`; jax's garbage-collector hook, jax being imported by TensorFlow's
    TFLite converter where installed) is delivered again a millisecond later, from a timer
    thread (not inside the hook, where it would be lost again), or when the command ends before
    that, instead of being printed and lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_hook, previous_handler = sys.unraisablehook, signal.getsignal(signal.SIGTERM)
    lost = {}  # a lost signal's number -> its timer, until it is delivered

    def deliver(signum):
        lost.pop(signum, None)
        _thread.interrupt_main(signum)

    def unraisable(info):
        signum = {KeyboardInterrupt: signal.SIGINT, _Terminated: signal.SIGTERM}.get(type(info.exc_value))
        if signum is None:
            previous_hook(info)
        elif signum not in lost:
            lost[signum] = threading.Timer(0.001, deliver, (signum,))
            lost[signum].start()

    def terminate(signum, frame):
        raise _Terminated()

    sys.unraisablehook = unraisable
    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
        for signum, timer in list(lost.items()):  # not delivered yet: the command ends with it
            timer.cancel()
            raise KeyboardInterrupt if signum == signal.SIGINT else _Terminated()
    finally:
        for timer in list(lost.values()):
            timer.cancel()
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous_handler)


def _system_refusal(error):
    """One line for what the system refused and no writer reported itself: a full disk (with
    the file), or a file or folder it cannot read or write; None for anything else (a bug: its
    traceback is shown)."""
    from keras_lpips.disk_space import disk_full_error, disk_full_reason

    reason = disk_full_reason(error)
    path = getattr(error, "filename", None)
    if reason is not None:
        return disk_full_error(path, reason=reason) if path else reason + " while writing"
    if isinstance(error, OSError) and path is not None:
        return f"{path}: {error.strerror or error}"
    return None
