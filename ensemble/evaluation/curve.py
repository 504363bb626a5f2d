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
import torch

from fusion import new_fuser

from ..core.classes import BASELINE, CLASS_NAMES, CONTROL, TERRAIN_CLASSES, TUNED_BASELINE
from ..core.devices import machine_cores
from ..core.errors import RunError
from ..core.metrics import confusion_matrix, iou_per_class, mean_iou
from ..core.objectives import HEADLINE_CONVENTION
from ..core.split import tiles_per_epoch
from ..inference import MEMBERS, InferenceOptions, Predictor
from ..inference.loading import checkpoint_at, network_metrics
from .crossfit import fitted_logits


def curve_epochs(folder, names):
    """Snapshot epochs of the networks ``names``, ascending (their union)."""
    return sorted({e for name in names for e in folder.snapshot_epochs(name)})


def training_minutes(folder, names, epoch, cores):
    """Minutes of training the networks ``names`` up to ``epoch`` with every one of ``cores`` busy."""
    core_seconds = 0.0
    for name in names:
        metrics = network_metrics(folder, name) or {}
        for h in metrics.get("history", []):
            if h["epoch"] <= epoch:
                core_seconds += h["seconds"] * h.get("threads", 1)
    return core_seconds / cores / 60


def snapshot_logits(folder, source, epoch, images, options, log=None):
    """Logits (N, 5, H, W) of ``source`` on ``images`` with its networks as they stood after ``epoch``, run by a
    :class:`~ensemble.inference.Predictor` with ``options`` (engine, TTA, batch size, layout)."""
    predictor = Predictor(folder.path, None if source == MEMBERS else source, epoch=epoch, options=options, log=log)
    return predictor.predict_member_logits(images) if source == MEMBERS else predictor.predict_logits(images)


def recorded_cores(folder, names):
    """The cores the networks' training recorded (the most, over their epochs), or ``None`` if none did."""
    cores = [h["cores"] for name in names for h in (network_metrics(folder, name) or {}).get("history", [])
             if "cores" in h]
    return max(cores) if cores else None


def check_snapshots(folder):
    """The budget curve's epochs, after verifying every checkpoint of the members and the baseline it will load
    (:func:`~ensemble.inference.loading.checkpoint_at`), so that a missing or changed snapshot is refused before
    anything is scored. ``RunError`` when the run kept no snapshots."""
    names = [*CLASS_NAMES, BASELINE]
    epochs = curve_epochs(folder, names)
    if not epochs:
        raise RunError(f"{folder.path}: no snapshots for a budget curve; train with "
                       "--set 'snapshot_fractions=[0.125,0.25,0.5,1]' (the full preset keeps them)")
    for epoch in epochs:
        for name in names:
            checkpoint_at(folder, name, epoch)
    return epochs


def budget_curve(folder, data, scores, *, strategies, folds, epochs=None, options=None, log=None):
    """Score every model at every snapshot epoch on the tiles of ``scores`` (the clean evaluation's
    :class:`~ensemble.evaluation.evaluate.Scores`: its ``val_idx`` and ``ids``); return the curve dict (see the
    module docstring).

    ``epochs`` are those :func:`check_snapshots` returned when the caller checked the snapshots
    already (``None``: they are checked here).
    ``strategies`` are fuser names, refitted per point cross-fitted on ``folds`` (``None``: in-sample);
    the minutes count the cores the training recorded, else this machine's; ``options``
    (:class:`~ensemble.inference.options.InferenceOptions`) say how the snapshots' networks run.
    """
    log = log or (lambda line: None)
    options = options or InferenceOptions()
    objective = folder.objective()
    headline = HEADLINE_CONVENTION[objective]
    controls = folder.control_names()
    groups = {"members": list(CLASS_NAMES), BASELINE: [BASELINE], CONTROL: controls}
    epochs = epochs or check_snapshots(folder)
    val_idx, ids = scores.val_idx, scores.ids
    truth = data.masks[val_idx]
    images = data.images[val_idx]
    config = folder.config()["networks"]
    train_tiles = len(folder.manifest()["split"]["train_indices"])
    epoch_tiles = tiles_per_epoch(config[BASELINE]["samples_per_epoch"], train_tiles)
    cores = recorded_cores(folder, [n for names in groups.values() for n in names]) or machine_cores()
    points = []

    def score(miou, big_rock, name, class_logits):
        cm = confusion_matrix(truth, torch.as_tensor(class_logits).argmax(1).numpy())
        miou[name] = float(mean_iou(cm, headline))
        big_rock[name] = float(iou_per_class(cm, headline)[TERRAIN_CLASSES[-1]])

    for epoch in epochs:
        log(f"  budget curve: epoch {epoch}")
        miou, big_rock = {}, {}
        baseline_logits = snapshot_logits(folder, BASELINE, epoch, images, options, log)
        score(miou, big_rock, BASELINE, baseline_logits)
        score(miou, big_rock, TUNED_BASELINE,
              fitted_logits(new_fuser("bias", objective), baseline_logits, truth, folds, ids))
        del baseline_logits
        if controls:
            try:
                score(miou, big_rock, CONTROL, snapshot_logits(folder, CONTROL, epoch, images, options, log))
            except RunError:  # a control trained without snapshots: no curve for it
                pass
        member_logits = snapshot_logits(folder, MEMBERS, epoch, images, options, log)
        for name in strategies:
            score(miou, big_rock, name, fitted_logits(new_fuser(name, objective), member_logits, truth, folds, ids))
        del member_logits
        minutes = {group: training_minutes(folder, names, epoch, cores) for group, names in groups.items() if names}
        points.append({"epoch": epoch, "tiles_seen": epoch * epoch_tiles,
                       "minutes": minutes, "miou": miou, "big_rock": big_rock})
    return {"headline": headline, "cores": cores, "strategies": list(strategies), "points": points}


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
