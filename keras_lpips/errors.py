"""Exceptions keras-lpips raises for problems a user can cause.

Every error a user can trigger (a bad image, a missing weight file, an unknown
network name) is one of these, with a message that says what was received and
what was expected. The CLI turns them into one line on stderr and the error's `exit_code`:

- 2, a usage error (`InputError`): an argument, option or value is wrong; the call must change.
- 1, a failure at run time (every other class, and `InputError`'s subclasses `DataError` and
  `OutputError`): a file found while working is bad, an output cannot be written, weights are
  unavailable or do not match their checksum, a download fails, disk or memory run short.

(130 is Ctrl-C; Click's own usage errors exit 2 as well.)
"""


class KerasLPIPSError(Exception):
    """Base class of every error keras-lpips reports to users."""

    exit_code = 1  # the command's exit status: a failure at run time, unless a class says otherwise
    # Raised while a `tf.function` is traced, autograph would turn it into a many-line StagingError.
    ag_pass_through = True


class InputError(KerasLPIPSError, ValueError):
    """A usage error: images or arguments of the wrong shape, range, size, type or value, a path
    that does not exist or an option that does not apply (exit code 2)."""

    exit_code = 2


class DataError(InputError):
    """A file found while working is unreadable or holds bad data: an image that does not decode,
    a BAPPS judge file out of range, a damaged checkpoint or embed file (exit code 1)."""

    exit_code = 1


class OutputError(InputError):
    """An output cannot be written: no permission, a read-only place, an I/O error (exit code 1;
    a full disk is a `DiskFullError`)."""

    exit_code = 1


class WeightsError(KerasLPIPSError):
    """A weight file is missing, corrupt, or does not fit the network."""


class ChecksumError(WeightsError):
    """A downloaded or cached file does not have its published sha256."""


class UnsafeFileError(WeightsError):
    """A file that would run or write more than it should: a pickle asking for a global outside
    the allow-list, an archive member landing outside its destination, a SavedModel that could
    run an op keras-lpips exports never run (`keras_lpips.savedmodel_ops`)."""


class WeightsUnavailableError(WeightsError):
    """Pretrained weights are not cached and no source could be reached."""


class DownloadError(KerasLPIPSError, ConnectionError):
    """A download failed: the server cannot be reached, answers with an error, or the transfer was
    cut short (a partial file is kept and the next call resumes it)."""


class ResourceError(KerasLPIPSError):
    """Not enough disk space or memory for the work asked: a failure at run time, not a usage
    error (exit code 1)."""


class DiskFullError(ResourceError):
    """A write was refused for lack of space (ENOSPC, EDQUOT or EFBIG), or work whose size is
    known up front would not fit in the free disk space. Nothing half-written is left.

    Attributes: `path` (what was, or would have been, written), `needed` and `free` (bytes;
    None where unknown), `reason` (the system's message, e.g. "No space left on device"; None
    for a refusal up front)."""

    def __init__(self, message, path=None, needed=None, free=None, reason=None):
        super().__init__(message)
        self.path, self.needed, self.free, self.reason = path, needed, free, reason


class InsufficientMemoryError(ResourceError, MemoryError):
    """Work whose size is known up front would not fit in the memory available now."""


class InUseError(KerasLPIPSError):
    """Another process holds what this one would write (a training run's folder, locked while it
    trains): a failure at run time (exit code 1)."""


class KerasLPIPSNote(UserWarning):
    """Not an error: what a long-running function chose, or could not do, that its caller should
    hear (`fit`: nothing to resume, a strategy of one replica, no TensorBoard logs). Python shows
    it as a warning, which `warnings.filterwarnings("ignore", category=KerasLPIPSNote)` silences
(`note` gives one);
    the CLI shows each as a line `note: MESSAGE` on stderr."""


def note(message):
    """Tells the caller `message` as a `KerasLPIPSNote` (see there): not an error, but what it
    should hear."""
    import warnings

    warnings.warn(message, KerasLPIPSNote, stacklevel=3)


def reason(error):
    """What an error says, in one line for a message that names the file itself: an OSError's
    strerror (without the file name it repeats), else the first line of its message, else its
    type's name."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return (text.strip().splitlines() or [type(error).__name__])[0]
