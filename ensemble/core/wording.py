"""Who the tool is talking to: the ``ensemble`` command (errors and messages name CLI options, ``--run``) or a Python
program (they name arguments, ``run=``).

:func:`api_function` marks every public function of :mod:`ensemble.api`; the CLI wraps each command in
:func:`called_from_cli`. Messages go through the ``ensemble`` logger (:mod:`ensemble.core.logs`).
"""
import contextlib
import contextvars
import functools

from .errors import EnsembleError, in_argument_words
from .logs import console, logger

#: True while the ``ensemble`` command calls the API: its errors and messages then keep the CLI's option names.
_FROM_CLI = contextvars.ContextVar("ensemble_from_cli", default=False)
_LOG = logger("ensemble")


@contextlib.contextmanager
def called_from_cli():
    """Errors raised and lines said inside keep naming CLI options (``--run``); the CLI wraps every command in it."""
    token = _FROM_CLI.set(True)
    try:
        yield
    finally:
        _FROM_CLI.reset(token)


def in_callers_words(text):
    """``text`` as the caller reads it: unchanged for the CLI, options turned into arguments for Python."""
    return text if _FROM_CLI.get() else in_argument_words(text)


def say(line):
    """Log one progress line of a verb, in the caller's words."""
    _LOG.info(in_callers_words(line))


def warn(line):
    """Log one diagnostic line (shown also when ``quiet``), in the caller's words."""
    _LOG.warning(in_callers_words(line))


def api_function(func):
    """A public API function: its :class:`EnsembleError` speaks of arguments (``run=``) to a Python caller, and its
    messages are shown on stderr unless the program configured :mod:`logging` itself."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with console():
            try:
                return func(*args, **kwargs)
            except EnsembleError as exc:
                if _FROM_CLI.get():
                    raise
                raise type(exc)(in_argument_words(str(exc))) from None

    return wrapper
