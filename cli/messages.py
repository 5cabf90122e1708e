"""The program's words for what the library says: its Python arguments as flags
(`cli_spelling`), its notes as `note:` lines (`notes_as_lines`), and what the system refused as
one line (`system_refusal`)."""

import contextlib
import re

import typer

from keras_lpips.cli import options

# The library's messages name its Python arguments: with a value (`backbone_weights=PATH`,
# `resume=True`), or alone, as `net=` followed by a space, a comma, ";", ")" or the message's end
# ("drop net=, layers="); the program's name its flags. The arguments the program has a flag
# for, and argument -> flag where they differ in more than `_` / `-` (`fit`'s `out_dir`).
ARGUMENTS = (
    "backbone_weights", "lin_weights", "net", "version", "distance", "layers", "model", "preset",
    "out", "out_dir", "resume", "overwrite", "resize", "frame", "strategy", "load_size", "n_train", "n_val", "n_jnd",
    "format", "quantize", "model_version", "max_pixels", "search", "projection",
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


@contextlib.contextmanager
def notes_as_lines():
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


def system_refusal(error):
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
