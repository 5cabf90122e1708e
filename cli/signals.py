"""Ctrl-C and SIGTERM while a command runs: both stop it through its writers' cleanup (nothing
left half-written), even when they land where Python cannot raise."""

import _thread
import contextlib
import signal
import sys
import threading


class Terminated(BaseException):
    """SIGTERM (`docker stop`, `timeout`, a scheduler), raised in the main thread as Ctrl-C is:
    the writers' cleanup runs, so nothing is left half-written."""


class Received:
    """The stopping signal a command received (`signum`, None until one came): the command ends
    as stopped by it whatever error it ends with, since a Ctrl-C that lands inside a C call can
    surface as another exception (a SystemError from a TensorFlow training step, seen)."""

    def __init__(self):
        self.signum = None


@contextlib.contextmanager
def stopping_on_signals():
    """While the command runs (in the main thread; elsewhere signals are not Python's to handle):
    SIGTERM raises `Terminated`, and a Ctrl-C or SIGTERM that lands in a callback Python cannot
    raise from (a `__del__`; jax's garbage-collector hook, jax being imported by TensorFlow's
    TFLite converter where installed) is delivered again a millisecond later, from a timer
    thread (not inside the hook, where it would be lost again), or when the command ends before
    that, instead of being printed and lost. Yields a `Received`."""
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous_hook, previous_handler = sys.unraisablehook, signal.getsignal(signal.SIGTERM)
    previous_interrupt = signal.getsignal(signal.SIGINT)
    lost = {}  # a lost signal's number -> its timer, until it is delivered

    def deliver(signum):
        lost.pop(signum, None)
        _thread.interrupt_main(signum)

    def unraisable(info):
        signum = {KeyboardInterrupt: signal.SIGINT, Terminated: signal.SIGTERM}.get(type(info.exc_value))
        if signum is None:
            previous_hook(info)
        elif signum not in lost:
            lost[signum] = threading.Timer(0.001, deliver, (signum,))
            lost[signum].start()

    def terminate(signum, frame):
        received.signum = signum
        raise Terminated()

    def interrupt(signum, frame):
        received.signum = signum
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

    sys.unraisablehook = unraisable
    signal.signal(signal.SIGTERM, terminate)
    if previous_interrupt is signal.default_int_handler:  # Python's own (not one a caller set, nor SIG_IGN)
        signal.signal(signal.SIGINT, interrupt)
    try:
        yield received
        for signum, timer in list(lost.items()):  # not delivered yet: the command ends with it
            timer.cancel()
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()
    finally:
        for timer in list(lost.values()):
            timer.cancel()
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous_handler)
        signal.signal(signal.SIGINT, previous_interrupt)
