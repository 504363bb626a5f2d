"""What the report compares beyond each model's own score: the models at equal training cost (with the networks
and minutes each one costs), flip TTA's gain per served model, and the threads the networks trained with."""
import functools
import math

from fusion import FUSERS

from ..core.classes import (
    BASELINE,
    BASELINE_PAIR,
    BASELINE_PAIR_BIAS,
    CLASS_NAMES,
    CONTROL,
    STUDENT,
    TUNED_BASELINE,
    TUNED_STUDENT,
)
from ..core.devices import machine_cores
from ..core.metrics import mean_ious
from ..core.runfolder import METRICS
from ..inference import source_networks
from .bootstrap import paired_bootstrap
from .curve import recorded_cores, training_minutes

#: The equal-compute questions: at each budget, the models that spend it and the paired differences shown
#: (model, minus model). The report keeps the questions whose models were all scored.
BUDGETS = (
    ("the baseline's budget", ("learned", BASELINE, TUNED_BASELINE),
     (("learned", BASELINE), ("learned", TUNED_BASELINE))),
    ("the members' budget", ("learned", CONTROL), (("learned", CONTROL),)),
    ("twice the baseline's budget", ("hybrid", "stacked", BASELINE_PAIR, BASELINE_PAIR_BIAS),
     (("hybrid", BASELINE_PAIR_BIAS), ("stacked", BASELINE_PAIR_BIAS), ("hybrid", TUNED_BASELINE))),
)


def student_teacher(folder):
    """The strategy the run's student was distilled from (``None`` without a student or a recorded teacher)."""
    network = folder.config().get("networks", {}).get(STUDENT)
    return (network or {}).get("distill", {}).get("teacher")


def model_networks(folder, name):
    """The networks a model's training cost: the baseline, the control's nets, those of a fuser's sources; for the
    student (plain or tuned), its teacher's networks and then itself, since it cannot exist without them."""
    if name == CONTROL:
        return folder.control_names()
    sources = FUSERS[name].sources if name in FUSERS else (name,)
    networks = [net for source in sources for net in source_networks(folder, source)]
    if STUDENT in networks:
        teacher = student_teacher(folder)
        if teacher:
            networks = [*dict.fromkeys([*model_networks(folder, teacher), *networks])]
    return networks


def distillation_question(folder, tile_cms):
    """The student's question, when the run has one scored: at one network's predict cost, what did learning from
    the teacher buy over the labels alone (student vs baseline, tuned vs tuned), and what does the one network keep
    of its teacher; ``None`` otherwise. Same form as a :data:`BUDGETS` entry."""
    if STUDENT not in tile_cms:
        return None
    teacher = student_teacher(folder)
    models = tuple(dict.fromkeys([STUDENT, TUNED_STUDENT, BASELINE, TUNED_BASELINE, teacher]))
    pairs = ((STUDENT, BASELINE), (TUNED_STUDENT, TUNED_BASELINE), (STUDENT, teacher), (TUNED_STUDENT, teacher))
    return ("one network at predict time: the student (its minutes include its teacher's)", models,
            tuple((a, b) for a, b in pairs if a != b))


def budget_comparisons(folder, table, tile_cms, n_boot=1000, seed=0):
    """The equal-compute comparison (:data:`BUDGETS`, then the student's question, :func:`distillation_question`):
    per question each model's headline mIoU and training minutes, and the paired-bootstrap differences with their
    95 % intervals.

    Minutes are those of the budget curve (:func:`~ensemble.evaluation.curve.training_minutes`): every epoch's
    seconds times its torch threads, summed over the model's networks, over the recorded cores.
    """
    headline = table["headline"]
    metric = functools.partial(mean_ious, convention=headline)
    out = []
    for label, models, pairs in [*BUDGETS, *filter(None, [distillation_question(folder, tile_cms)])]:
        if not any(a in tile_cms and b in tile_cms for a, b in pairs):
            continue
        rows = []
        for name in models:
            if name not in tile_cms:
                continue
            networks = model_networks(folder, name)
            cores = recorded_cores(folder, networks) or machine_cores()
            rows.append({"model": name, "miou": table["models"][name]["miou"][headline],
                         "networks": len(networks), "minutes": training_minutes(folder, networks, 10**9, cores)})
        diffs = [{"model": a, "minus": b, **paired_bootstrap(tile_cms[b], tile_cms[a], metric, n_boot=n_boot,
                                                             seed=seed)}
                 for a, b in pairs if a in tile_cms and b in tile_cms]
        out.append({"budget": label, "rows": rows, "differences": diffs})
    return out


def tta_gains(scores, flip_scores, served, headline, n_boot=1000, seed=0):
    """Flip TTA measured: per served model its headline mIoU without and with the flip, the paired-bootstrap
    gain (flip - none) with its 95 % interval, and the TTA it is served with by default.

    A model is served with ``flip`` only where the interval's lower end is above 0: the flip doubles the
    networks' work, so it must buy a gain the validation tiles can tell from noise.
    Returns ``{"rows": [{"model", "miou_none", "miou_flip", "diff", "low", "high", "default"}],
    "defaults": {model: "none" | "flip"}}``.
    """
    metric = functools.partial(mean_ious, convention=headline)
    rows = []
    for name in served:
        none_cms, flip_cms = scores.tile_cms[name], flip_scores.tile_cms[name]
        gain = paired_bootstrap(none_cms, flip_cms, metric, n_boot=n_boot, seed=seed)
        rows.append({"model": name, "miou_none": float(metric(none_cms.sum(axis=0))),
                     "miou_flip": float(metric(flip_cms.sum(axis=0))), **gain,
                     "default": "flip" if gain["low"] > 0 else "none"})
    return {"rows": rows, "defaults": {row["model"]: row["default"] for row in rows}}


def training_threads(folder):
    """``"soil 1, ..., baseline 2"``: the torch threads each network trained with (they change the numbers)."""
    parts = []
    for name in [*CLASS_NAMES, BASELINE, *folder.control_names()]:
        path = folder.network_dir(name) / METRICS
        history = folder.read_json(path).get("history", []) if path.exists() else []
        threads = sorted({h["threads"] for h in history if "threads" in h})
        if threads:
            parts.append(f"{name} {'/'.join(map(str, threads))}")
    return ", ".join(parts) or "not recorded"


ABLATED = "hybrid"


def ablation_variants(hybrid):
    """``(label, constructor change)`` of each variant the ablation scores: the hybrid without each member in
    turn, then with its mixing weight fitted (or fixed at 0.5 when the run's hybrid fits it)."""
    variants = [(f"without {member}", {"drop_member": k}) for k, member in enumerate(CLASS_NAMES)]
    mix = hybrid.get_params()["mix"]
    return variants + [("weight fitted", {"mix": None}) if mix is not None else ("weight 0.5", {"mix": 0.5})]


def ablation_table(scores, table, n_boot=1000, seed=0):
    """Rows of the ablation: each hybrid variant (:func:`ablation_variants`), its headline mIoU and the paired
    differences to the run's hybrid and to the bias-tuned baseline (95 % intervals)."""
    headline = table["headline"]
    metric = functools.partial(mean_ious, convention=headline)
    rows = []
    for variant, cms in scores.ablation_cms.items():
        row = {"variant": variant, "miou": float(metric(cms.sum(axis=0)))}
        for key, other in (("vs_full", ABLATED), ("vs_tuned_baseline", TUNED_BASELINE)):
            row[key] = paired_bootstrap(scores.tile_cms[other], cms, metric, n_boot=n_boot, seed=seed)
        rows.append(row)
    return rows


def served_models(scores, fusers):
    """The models ``predict`` can serve among those scored: the fusers, the baseline, the control, the student."""
    return [name for name in scores.tile_cms if name in fusers or name in (BASELINE, CONTROL, STUDENT)]


def best_strategy(table, candidates):
    """The candidate with the highest headline mean IoU (cross-fitted for fusers); the first one on a tie."""
    def miou(name):
        value = table["models"][name]["miou"][table["headline"]]
        return value if math.isfinite(value) else -math.inf

    return max(candidates, key=miou)
