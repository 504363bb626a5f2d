"""Where a run stands (``ensemble status``): each network's state, epoch, best score and ETA, read from its folder.

A network is *done* when its ``metrics.json`` says finished, *running* while a process holds its training lock
(:class:`~ensemble.core.history.TrainingLock`), *stopped* when it has started but nobody trains it now (the same
command resumes it from ``latest.pt``), and *queued* when the run's ``config.json`` lists it but it has not started.
"""
import json
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..core.history import is_training, read_history
from ..core.runfolder import HISTORY_CSV, METRICS, RunFolder

STATES = ("done", "running", "stopped", "queued")


@dataclass
class NetworkStatus:
    """One network of a run as ``ensemble status`` shows it (scores and times ``None`` where not known yet)."""

    name: str
    state: str
    epoch: int
    epochs: int
    best_score: float = None
    best_epoch: int = None
    seconds_per_epoch: float = None
    eta_seconds: float = None
    last_update: float = None  # seconds since its last finished epoch

    def to_dict(self):
        return asdict(self)


def _finished(network_dir):
    path = network_dir / METRICS
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return metrics if metrics.get("finished") else None


def network_status(folder, name, epochs, now=None):
    """The :class:`NetworkStatus` of network ``name`` of ``folder`` (a :class:`RunFolder`), planned for ``epochs``."""
    now = time.time() if now is None else now
    network_dir = folder.network_dir(name)
    metrics = _finished(network_dir)
    if metrics is not None:
        seconds = [h["seconds"] for h in metrics.get("history", [])]
        return NetworkStatus(name, "done", metrics["epochs_run"], epochs, metrics["best_val_iou"],
                             metrics["best_epoch"], float(np.mean(seconds)) if seconds else None, 0.0)
    history_path = network_dir / HISTORY_CSV
    running = is_training(network_dir)
    if not history_path.exists():
        return NetworkStatus(name, "running" if running else "queued", 0, epochs)
    rows = read_history(history_path)
    status = NetworkStatus(name, "running" if running else "stopped", len(rows), epochs,
                           last_update=now - history_path.stat().st_mtime)
    scored = [r for r in rows if r.get("val_score") is not None]
    if scored:
        best = max(scored, key=lambda r: r["val_score"])
        status.best_score, status.best_epoch = best["val_score"], int(best["epoch"])
    seconds = [r["seconds"] for r in rows if r.get("seconds") is not None]
    if seconds:
        status.seconds_per_epoch = float(np.mean(seconds))
        remaining = status.seconds_per_epoch * (epochs - len(rows))
        if running:  # part of the current epoch has passed already
            remaining -= min(status.last_update, status.seconds_per_epoch)
        status.eta_seconds = max(0.0, remaining)
    return status


def run_status(run_dir, now=None):
    """Every network of the run's ``config.json``, in its order, as :class:`NetworkStatus`."""
    folder = RunFolder(run_dir)
    networks = folder.config().get("networks", {})
    return [network_status(folder, name, int(config.get("epochs", 0)), now) for name, config in networks.items()]


def _duration(seconds):
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def status_lines(run_dir, statuses):
    """The table ``ensemble status`` prints: a summary line, then one line per network."""
    counts = {state: sum(s.state == state for s in statuses) for state in STATES}
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    lines = [f"{run_dir}: {len(statuses)} network(s): {summary or 'none planned'}",
             f"{'network':<12} {'state':<8} {'epoch':>7}  {'best (epoch)':<15} {'s/epoch':>7}  {'last epoch':>10}  ETA"]
    for s in statuses:
        best = f"{s.best_score:.4f} ({s.best_epoch})" if s.best_score is not None else "-"
        seconds = f"{s.seconds_per_epoch:.0f}" if s.seconds_per_epoch is not None else "-"
        ago = f"{_duration(s.last_update)} ago" if s.last_update is not None and s.state != "done" else "-"
        eta = _duration(s.eta_seconds) if s.state in ("running", "stopped") else "-"
        if s.state == "stopped":
            eta += " (resume: the same command)"
        lines.append(f"{s.name:<12} {s.state:<8} {s.epoch:>3}/{s.epochs:<3}  {best:<15} {seconds:>7}  {ago:>10}  {eta}")
    return lines
