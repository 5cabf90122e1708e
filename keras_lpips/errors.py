"""Exceptions keras-lpips raises for problems a user can cause.

Every error a user can trigger (a bad image, a missing weight file, an unknown
network name) is one of these, with a message that says what was received and
what was expected. The CLI turns them into one line on stderr and exit code 2.
"""


class KerasLPIPSError(Exception):
    """Base class of every error keras-lpips reports to users."""


class InputError(KerasLPIPSError, ValueError):
    """Images or arguments of the wrong shape, range, size or value."""


class WeightsError(KerasLPIPSError):
    """A weight file is missing, corrupt, or does not fit the network."""


class ChecksumError(WeightsError):
    """A downloaded or cached file does not have its published sha256."""


class UnsafeFileError(WeightsError):
    """A pickle asked for a global outside the allow-list, or an archive member
    would land outside its destination."""


class WeightsUnavailableError(WeightsError):
    """Pretrained weights are not cached and no source could be reached."""


class DownloadError(KerasLPIPSError, ConnectionError):
    """A download failed: the server cannot be reached, answers with an error, or the transfer was
    cut short (a partial file is kept and the next call resumes it)."""
