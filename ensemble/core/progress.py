"""Progress of long work: a ``tqdm`` bar on an interactive terminal, plain lines elsewhere.

On a terminal (stderr is a TTY, in the process that runs the command) the work shows a tqdm bar with its rate
and ETA. Where nobody watches a bar (a log file, a pipe, CI, a worker process whose lines interleave with
others), the same work says one line at most every few seconds, or per step, through the caller's ``log``, so
log files keep a readable record. ``log`` ``None`` (``--quiet``) shows nothing either way.
"""
import multiprocessing
import sys
import time

from tqdm import tqdm


def bars_wanted():
    """True when a bar can be drawn: stderr is a terminal and this is not a worker process."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and multiprocessing.parent_process() is None


class Progress:
    """``total`` units of work (``unit``: images, batches, steps) reported to ``log``.

    :meth:`update` moves to ``done`` units with optional figures for the bar (``postfix``, e.g. loss, tiles/s);
    without a bar a line goes to ``log`` at most every ``every`` seconds (``None``: never, the caller logs its
    own lines). :meth:`step` counts one named step (a line per step without a bar). :meth:`close` ends the bar.
    """

    def __init__(self, total, log, *, unit="images", desc=None, every=2.0):
        self.total, self.log, self.unit, self.desc, self.every = total, log, unit, desc, every
        self.started = self.last = time.perf_counter()
        self.done = 0
        self.bar = None
        if log is not None and bars_wanted():
            self.bar = tqdm(total=total, unit=f" {unit}", desc=desc, file=sys.stderr, leave=False,
                            dynamic_ncols=True, mininterval=0.5)

    @property
    def elapsed(self):
        """Seconds since the work started."""
        return max(time.perf_counter() - self.started, 1e-9)

    def update(self, done, line=None, **postfix):
        """Move to ``done`` units; ``line`` (a callable giving the text) is what a log hears without a bar."""
        self.bar_update(done - self.done, postfix)
        self.done = done
        now = time.perf_counter()
        if self.bar is not None or self.log is None or self.every is None or now - self.last < self.every:
            return
        self.last = now
        self.log(line() if line else self._line(postfix))

    def step(self, label):
        """Count one step named ``label``: the bar's description, or one line to ``log``."""
        self.done += 1
        if self.bar is not None:
            self.bar.set_description(f"{self.desc}: {label}" if self.desc else label, refresh=False)
            self.bar.update(1)
        elif self.log is not None:
            self.log(f"{self.desc + ' ' if self.desc else ''}{self.done}/{self.total}: {label}")

    def bar_update(self, n, postfix):
        if self.bar is None:
            return
        if postfix:
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                 refresh=False)
        self.bar.update(n)

    def _line(self, postfix):
        eta = self.elapsed / max(self.done, 1) * (self.total - self.done)
        extra = "".join(f", {k} {v:.4g}" if isinstance(v, float) else f", {k} {v}" for k, v in postfix.items())
        return f"{self.desc + ' ' if self.desc else ''}{self.done}/{self.total} {self.unit}{extra}, ETA {eta:.0f} s"

    def close(self):
        """End the bar (it leaves no trace on the terminal; the caller logs the summary line)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
