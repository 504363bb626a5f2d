"""Messages through the standard :mod:`logging` module: one logger per package, the console on stderr, and a
timestamped log file in the run folder for every verb that writes to a run.

Every progress and diagnostic line of a command is a log record of the ``ensemble``, ``members`` or ``fusion``
logger (``logging.getLogger(__name__)`` in a module). The CLI and the API show them on stderr as bare lines, as
before (:func:`console`; ``quiet`` keeps warnings only); a program that configures :mod:`logging` itself gets
them through its own handlers instead. Results a user pipes (tables, scores) are printed on stdout by the CLI,
never logged. :func:`run_log` adds ``RUN/logs/<verb>-<UTC time>.log`` with timestamps for as long as a verb
works on the run; worker processes append their lines to the same file (:func:`task_logging`).
"""
import contextlib
import contextvars
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from .runfolder import LOG_DIR, RunFolder

#: The project's packages, one logger each.
PACKAGES = ("ensemble", "members", "fusion")
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The log file of the run a verb is working on (``None`` outside one): a nested verb (``run`` calls ``fuse``)
#: writes to it instead of opening another, and training tasks hand it to their worker processes.
ACTIVE_LOG_FILE = contextvars.ContextVar("active_log_file", default=None)


def logger(name):
    """The logger of a module (``__name__``) or package."""
    return logging.getLogger(name)


def line_logger(name="ensemble", level=logging.INFO):
    """A callable taking one line, logging it to ``name`` at ``level``: what the project's ``log=`` arguments take."""
    target = logging.getLogger(name)
    return lambda line: target.log(level, line)


def _configured_elsewhere():
    """True when the program has configured logging itself (handlers on the root logger)."""
    return bool(logging.getLogger().handlers)


class _ConsoleHandler(logging.Handler):
    """Bare lines on the current ``sys.stderr`` (looked up per record, so test runners that swap it see them),
    written through ``tqdm.write`` so that a progress bar on the terminal is redrawn below them, not torn."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)


@contextlib.contextmanager
def console(quiet=False, *, command=False):
    """Show the packages' messages on stderr as bare lines for the duration (warnings only when ``quiet``), unless
    an enclosing call already shows them, or (for a Python caller, not the ``ensemble`` ``command``, which owns its
    stderr) the program configured logging itself."""
    loggers = [logging.getLogger(name) for name in PACKAGES]
    if any(isinstance(h, _ConsoleHandler) for h in loggers[0].handlers) or (_configured_elsewhere() and not command):
        yield
        return
    handler = _ConsoleHandler()
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, level, propagate in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate


class _RunLogHandler(logging.FileHandler):
    """A log file opened (and its folder made) at the first record it writes: a verb refused before it said
    anything leaves no trace in the run folder."""

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _file_handler(path):
    handler = _RunLogHandler(path, mode="a", encoding="utf-8", delay=True)
    formatter = logging.Formatter(FILE_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.setLevel(logging.INFO)
    return handler


@contextlib.contextmanager
def _attached(handler):
    loggers = [logging.getLogger(name) for name in PACKAGES]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
        handler.close()


def log_file_name(verb, now=None):
    """``<verb>-<UTC date and time>.log``."""
    return f"{verb}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}.log"


@contextlib.contextmanager
def run_log(run_dir, verb):
    """Write the packages' messages (with UTC timestamps) to ``RUN/logs/<verb>-<time>.log`` for the duration; yield
    its path. Inside another verb's run log (``run`` calling ``fuse``), that file goes on. A shipped, read-only run
    (or ``run_dir`` ``None``) gets none."""
    active = ACTIVE_LOG_FILE.get()
    if active is not None or run_dir is None or RunFolder(run_dir).read_only:
        yield active
        return
    path = Path(run_dir) / LOG_DIR / log_file_name(verb)
    token = ACTIVE_LOG_FILE.set(str(path))
    try:
        with _attached(_file_handler(path)):
            yield str(path)
    finally:
        ACTIVE_LOG_FILE.reset(token)


@contextlib.contextmanager
def task_logging(log_file, quiet):
    """In a training task: a worker process (whose packages' loggers have no handler) shows its lines on stderr
    (unless ``quiet``) and appends them to ``log_file``; in the process that runs the command, its handlers serve."""
    if any(logging.getLogger(name).handlers for name in PACKAGES) or _configured_elsewhere():
        yield
        return
    with contextlib.ExitStack() as stack:
        if log_file:
            stack.enter_context(_attached(_file_handler(log_file)))
        stack.enter_context(console(quiet))
        yield
