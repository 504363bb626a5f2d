"""Watching a run train: its ``progress.png`` redrawn after every epoch of any network, and optionally TensorBoard.

Each network writes ``history.csv`` (:mod:`ensemble.core.history`) at the end of every epoch; the figure is drawn
from all of them, so networks training in other processes at the same time appear together. Drawing never stops
a training: a figure that cannot be drawn is reported once and skipped.
"""
import logging
from pathlib import Path

import numpy as np

from ..core.errors import EnsembleError
from ..core.fileio import atomic_path
from ..core.history import read_history
from ..core.runfolder import (
    CACHE_DIR,
    EVALUATION_DIR,
    FUSION_DIR,
    HISTORY_CSV,
    LOG_DIR,
    PROGRESS_PNG,
    SNAPSHOT_DIR,
    TENSORBOARD_DIR,
)

log = logging.getLogger(__name__)

#: The run's TensorBoard logs: ``RUN/tensorboard/<network>/`` (scalars) and ``RUN/tensorboard/run/`` (figures).
#: History columns written to TensorBoard as scalars, by tag.
TENSORBOARD_SCALARS = {"loss/train": "train_loss", "loss/validation": "val_loss", "score/validation": "val_score",
                       "learning_rate": "lr", "speed/tiles_per_s": "tiles_per_s"}
_SKIPPED_FOLDERS = {CACHE_DIR, EVALUATION_DIR, FUSION_DIR, LOG_DIR, SNAPSHOT_DIR, TENSORBOARD_DIR}


def network_histories(run_dir):
    """``{network name: history rows}`` of every network of ``run_dir`` that has started, in folder order."""
    run_dir = Path(run_dir)
    found = {}
    for path in sorted(run_dir.rglob(HISTORY_CSV)):
        if _SKIPPED_FOLDERS & set(path.relative_to(run_dir).parts[:-1]):
            continue
        try:
            found[path.parent.name] = read_history(path)
        except (OSError, ValueError, KeyError):  # being replaced this instant, or not ours: the next redraw reads it
            continue
    return found


def _best_row(rows):
    scored = [r for r in rows if r.get("val_score") is not None]
    return max(scored, key=lambda r: r["val_score"]) if scored else None


def _column(rows, key):
    """The ``key`` of each of ``rows``, NaN where it is missing or ``None``."""
    return [np.nan if r.get(key) is None else r[key] for r in rows]


def progress_figure(histories, title):
    """The matplotlib figure of ``histories``: loss (training solid, validation dashed), validation score with a
    star at each network's best epoch, and the learning rate, against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (loss_ax, score_ax, lr_ax) = plt.subplots(1, 3, figsize=(14, 4.2))
    for index, (name, rows) in enumerate(histories.items()):
        color = f"C{index % 10}"
        epochs = [r["epoch"] for r in rows]
        loss_ax.plot(epochs, _column(rows, "train_loss"), color=color, label=name)
        loss_ax.plot(epochs, _column(rows, "val_loss"), color=color, linestyle="--")
        score_ax.plot(epochs, _column(rows, "val_score"), color=color, marker=".", label=name)
        best = _best_row(rows)
        if best is not None:
            score_ax.plot([best["epoch"]], [best["val_score"]], color=color, marker="*", markersize=13,
                          markeredgecolor="black", linestyle="none")
        lr_ax.plot(epochs, _column(rows, "lr"), color=color, label=name)
    loss_ax.set_title("loss (training solid, validation dashed)")
    score_ax.set_title("validation score (star: best epoch)")
    lr_ax.set_title("learning rate at the epoch's end")
    for ax in (loss_ax, score_ax, lr_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if histories:
        score_ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def draw_progress(run_dir):
    """Redraw ``RUN/progress.png`` from every network's ``history.csv`` (atomically); return its path."""
    from matplotlib import pyplot as plt

    run_dir = Path(run_dir)
    histories = network_histories(run_dir)
    done = sum(len(rows) for rows in histories.values())
    fig = progress_figure(histories, f"{run_dir.name}: {len(histories)} network(s), {done} epoch(s) finished "
                                     "(members: IoU of their class; multiclass: mIoU in the run's objective)")
    path = run_dir / PROGRESS_PNG
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=90)
    finally:
        plt.close(fig)
    return path


def check_tensorboard():
    """Raise a one-line error when TensorBoard's writer cannot be imported (the optional extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise EnsembleError("--tensorboard needs the optional extra: "
                            "pip install 'mars-ensemble[tensorboard]'") from None


class TrainingWatch:
    """Called after every epoch of every network of a run (picklable, so worker processes call it too): redraws
    the run's ``progress.png`` and, with ``tensorboard``, writes the epoch's scalars under
    ``RUN/tensorboard/<network>/`` and the progress figure under ``RUN/tensorboard/run/``."""

    def __init__(self, run_dir, *, tensorboard=False):
        self.run_dir = str(run_dir)
        self.tensorboard = tensorboard
        self._writers = {}
        self._warned = False

    def __getstate__(self):
        return {**self.__dict__, "_writers": {}}  # writers are per process

    def _writer(self, name):
        if name not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[name] = SummaryWriter(log_dir=str(Path(self.run_dir) / TENSORBOARD_DIR / name))
        return self._writers[name]

    def __call__(self, network_dir, row):
        try:
            draw_progress(self.run_dir)
            if self.tensorboard:
                self._log_tensorboard(Path(network_dir).name, row)
        except Exception as exc:  # a figure or log that fails must not stop the training
            if not self._warned:
                log.warning("%s: progress not recorded (%s: %s); training goes on", self.run_dir,
                            type(exc).__name__, exc)
                self._warned = True

    def _log_tensorboard(self, name, row):
        from matplotlib import pyplot as plt

        writer, epoch = self._writer(name), int(row["epoch"])
        flat = {**row, "train_loss": row.get("loss"), "val_score": row.get("val_iou")}
        for tag, key in TENSORBOARD_SCALARS.items():
            if flat.get(key) is not None:
                writer.add_scalar(tag, float(flat[key]), epoch)
        for class_name, value in (row.get("iou") or {}).items():
            writer.add_scalar(f"iou/{class_name}", float(value), epoch)
        writer.flush()
        fig = progress_figure(network_histories(self.run_dir), Path(self.run_dir).name)
        run_writer = self._writer("run")
        run_writer.add_figure("progress", fig, global_step=epoch, close=True)
        run_writer.flush()
        plt.close(fig)


def log_figures(run_dir, pngs, *, step=0):
    """Add the PNG files ``pngs`` to the run's TensorBoard logs (``RUN/tensorboard/run/``), tagged by file name."""
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR / "run"))
    try:
        for png in pngs:
            with Image.open(png) as image:
                writer.add_image(Path(png).stem, np.asarray(image.convert("RGB")), global_step=step,
                                 dataformats="HWC")
    finally:
        writer.close()
