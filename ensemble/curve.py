"""The budget curve: ensemble, fusers, control and baseline scored at several points of their training.

A network whose recipe has ``snapshot_fractions`` keeps a copy of its ``best.pt`` as it stood after
those epochs (``snapshots/epoch_XXX.pt``: what a user stopping there would have). At every snapshot
epoch the members' logits on the validation tiles are fused by each strategy, cross-fitted over the
same folds of validation rover stops as the evaluation (so every point's fusers are fitted on
logits of that point), and scored beside the baseline, the baseline with its per-class logit offsets
tuned the same cross-fitted way (``baseline_bias``, :class:`fusion.BiasFuser`) and the control, when
the run has one, in the headline convention of the run's objective.

Training cost of a point is given two ways: tiles seen per network (epochs x tiles per epoch,
the same for every network) and training time: every network's epoch seconds up to that epoch
times the torch threads it ran with, summed over the networks of a model and divided by the cores
of the machine, i.e. the wall time of training them with every core busy. A network that stopped
early contributes its final ``best.pt`` and time to the later points.
"""
import numpy as np
import torch

from members.checkpoint import load_checkpoint, model_from_checkpoint
from members.training import tiles_per_epoch

from .core.classes import BASELINE, CLASS_NAMES, CONTROL, TERRAIN_CLASSES, TUNED_BASELINE
from .core.errors import RunError
from .core.fileio import atomic_path, write_json_atomic
from .core.metrics import confusion_matrix, iou_per_class, mean_iou
from .core.objectives import HEADLINE_CONVENTION, for_objective
from .core.runfolder import METRICS
from .crossfit import fitted_logits
from fusion import new_fuser
from .inference import (BATCH_SIZE, SoftmaxAverage, all_logits, channels_last, logits_batches, members_forward,
                        resolve_stack)

CURVE_JSON = "budget_curve.json"
CURVE_PNG = "budget_curve.png"


def _metrics(folder, name):
    path = folder.network_dir(name) / METRICS
    return folder.read_json(path) if path.exists() else None


def curve_epochs(folder, names):
    """Snapshot epochs of the networks ``names``, ascending (their union)."""
    return sorted({e for name in names for e in folder.snapshot_epochs(name)})


def checkpoint_at(folder, name, epoch):
    """The checkpoint of network ``name`` standing for ``epoch``: its snapshot, or ``best.pt`` if it stopped before."""
    path = folder.snapshot_path(name, epoch)
    if path.exists():
        return folder.verify(path)
    metrics = _metrics(folder, name)
    if metrics and metrics.get("finished") and metrics["epochs_run"] < epoch:
        return folder.verify(folder.best_path(name))
    raise RunError(f"{path}: missing; {name} has no snapshot for epoch {epoch} of the budget curve "
                   "(train with --set snapshot_fractions=[...] and let it finish)")


def training_minutes(folder, names, epoch, cores):
    """Minutes of training the networks ``names`` up to ``epoch`` with every one of ``cores`` busy."""
    core_seconds = 0.0
    for name in names:
        metrics = _metrics(folder, name) or {}
        for h in metrics.get("history", []):
            if h["epoch"] <= epoch:
                core_seconds += h["seconds"] * h.get("threads", 1)
    return core_seconds / cores / 60


def _network(folder, name, epoch, device, objective):
    state = load_checkpoint(checkpoint_at(folder, name, epoch), map_location=device)
    model = model_from_checkpoint(state, device)
    return model if name in CLASS_NAMES else for_objective(channels_last(model), objective)


def recorded_cores(folder, names):
    """The cores the networks' training recorded (the most, over their epochs), or ``None`` if none did."""
    cores = [h["cores"] for name in names for h in (_metrics(folder, name) or {}).get("history", []) if "cores" in h]
    return max(cores) if cores else None


def single_models(points):
    """The curve's models trained alone: the baseline, the bias-tuned baseline and the control when scored."""
    return [BASELINE, *(name for name in (TUNED_BASELINE, CONTROL) if any(name in p["miou"] for p in points))]


def budget_curve(folder, data, val_idx, strategies, folds, ids, cores, device="cpu", stack=None, log=None):
    """Score every model at every snapshot epoch; return the curve dict (see the module docstring).

    ``strategies`` are fuser names, refitted per point cross-fitted on ``folds`` (``None``: in-sample);
    ``cores`` the machine's cores when the training did not record them.
    """
    log = log or (lambda line: None)
    objective = folder.objective()
    headline = HEADLINE_CONVENTION[objective]
    controls = folder.control_names()
    groups = {"members": list(CLASS_NAMES), BASELINE: [BASELINE], CONTROL: controls}
    epochs = curve_epochs(folder, [*CLASS_NAMES, BASELINE])
    if not epochs:
        raise RunError(f"{folder.path}: no snapshots for a budget curve; train with "
                       "--set 'snapshot_fractions=[0.125,0.25,0.5,1]' (the full preset keeps them)")
    truth = data.masks[val_idx]
    images = data.images[val_idx]
    config = folder.config()["networks"]
    train_tiles = len(folder.manifest()["split"]["train_indices"])
    epoch_tiles = tiles_per_epoch(config[BASELINE]["samples_per_epoch"], train_tiles)
    cores = recorded_cores(folder, [n for names in groups.values() for n in names]) or cores
    points = []
    for epoch in epochs:
        log(f"  budget curve: epoch {epoch}")
        miou, big_rock = {}, {}

        def score(name, class_logits):
            cm = confusion_matrix(truth, torch.as_tensor(class_logits).argmax(1).numpy())
            miou[name] = float(mean_iou(cm, headline))
            big_rock[name] = float(iou_per_class(cm, headline)[TERRAIN_CLASSES[-1]])

        forward = _network(folder, BASELINE, epoch, device, objective)
        baseline_logits = all_logits(logits_batches(forward, images, BATCH_SIZE, device), len(images))
        score(BASELINE, baseline_logits)
        score(TUNED_BASELINE, fitted_logits(new_fuser("bias", objective), baseline_logits, truth, folds, ids))
        del baseline_logits
        if controls:
            try:
                forward = SoftmaxAverage([_network(folder, n, epoch, device, objective) for n in controls]).eval()
            except RunError:  # a control trained without snapshots: no curve for it
                forward = None
            if forward is not None:
                score(CONTROL, all_logits(logits_batches(forward, images, BATCH_SIZE, device), len(images)))
        members = [_network(folder, name, epoch, device, objective) for name in CLASS_NAMES]
        member_logits = all_logits(logits_batches(members_forward(members, resolve_stack(stack, "torch", device)),
                                                  images, BATCH_SIZE, device),
                                   len(images))
        for name in strategies:
            score(name, fitted_logits(new_fuser(name, objective), member_logits, truth, folds, ids))
        del member_logits
        minutes = {group: training_minutes(folder, names, epoch, cores) for group, names in groups.items() if names}
        points.append({"epoch": epoch, "tiles_seen": epoch * epoch_tiles,
                       "minutes": minutes, "miou": miou, "big_rock": big_rock})
    return {"headline": headline, "cores": cores, "strategies": list(strategies), "points": points}


def curve_rows(curve):
    """Markdown table lines of the curve: one row per point, mIoU of every model, minutes of each group."""
    models = [*single_models(curve["points"]), *curve["strategies"]]
    groups = list(curve["points"][0]["minutes"])
    headers = ["epoch", "tiles seen per network", *[f"min {g}" for g in groups], *[f"mIoU {m}" for m in models],
               "big rock: baseline / learned"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---:"] * len(headers)) + "|"]
    for p in curve["points"]:
        br = p["big_rock"]
        learned = br.get("learned", float("nan"))
        cells = [str(p["epoch"]), f"{p['tiles_seen']:,}",
                 *[f"{p['minutes'][g]:.1f}" for g in groups],
                 *[f"{p['miou'][m]:.3f}" if m in p["miou"] else "" for m in models],
                 f"{br[BASELINE]:.3f} / {learned:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def read_curve(path):
    """A budget curve written by :func:`write_curve` (``budget_curve.json``); ``RunError`` naming the file if not."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        curve = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: not a readable budget curve ({type(exc).__name__}: {exc})") from None
    if not isinstance(curve, dict) or not {"headline", "cores", "strategies", "points"} <= set(curve):
        raise RunError(f"{path}: not a budget curve (expected headline, cores, strategies and points)")
    return curve


def write_curve(out_dir, curve):
    """Write ``budget_curve.json`` and ``budget_curve.png`` (matplotlib, headless Agg) into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    write_json_atomic(out_dir / CURVE_JSON, curve)
    points = curve["points"]
    models = [*single_models(points), *curve["strategies"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for model in models:
        alone = model in (BASELINE, TUNED_BASELINE, CONTROL)
        group = CONTROL if model == CONTROL else BASELINE if alone else "members"
        style = {"linestyle": "--" if model != TUNED_BASELINE else ":", "marker": "s"} if alone else {"marker": "o"}
        ys = [p["miou"].get(model, np.nan) for p in points]
        axes[0].plot([p["minutes"][group] for p in points], ys, label=model, **style)
        axes[1].plot([p["tiles_seen"] for p in points], ys, label=model, **style)
    axes[0].set_xlabel(f"training time, minutes with {curve['cores']} cores busy")
    axes[1].set_xlabel("tiles seen per network")
    axes[0].set_ylabel(f"validation mIoU ({curve['headline']})")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle("Budget curve: every model at the same points of its training")
    fig.tight_layout()
    with atomic_path(out_dir / CURVE_PNG) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
