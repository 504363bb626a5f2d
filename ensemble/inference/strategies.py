"""Which model a run serves: the fitted fusers, the refusal of a strategy a run cannot serve, and the defaults
``ensemble evaluate`` records (best strategy, flip TTA per model)."""
import difflib
import json

from fusion import STRATEGIES

from ..core.classes import BASELINE, CONTROL, STUDENT
from ..core.errors import EnsembleError
from ..core.runfolder import RunFolder


def fitted_strategies(run):
    """Names of the fusers fitted in ``run`` (``RUN/fusion/<name>.pt``), in :data:`fusion.STRATEGIES` order."""
    names = [name for name in RunFolder(run).fuser_names() if name != BASELINE]
    rank = {name: i for i, name in enumerate(STRATEGIES)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def servable_names(folder):
    """Every model ``folder`` (a :class:`~ensemble.core.runfolder.RunFolder`) can serve: its fitted fusers, the
    baseline, its replicas (``baseline_1``), the student and the control when trained."""
    replicas = folder.baseline_replica_names() + ([STUDENT] if folder.best_path(STUDENT).exists() else [])
    controls = [CONTROL] if folder.control_names() else []
    return [*fitted_strategies(folder.path), BASELINE, *replicas, *controls]


def check_strategy(folder, strategy):
    """Refuse a strategy the run cannot serve, in one line with one list: the run's servable models, and how to fit
    a missing fuser (into a run of the user's own when this one is shipped), or for an unknown name the closest
    known one (a typo such as ``stackd``)."""
    served = servable_names(folder)
    if strategy in served:
        return
    listed = ", ".join(served)
    if strategy == CONTROL:
        hint = f"train it with: ensemble control --run {folder.path}"
    elif strategy in STRATEGIES and folder.read_only:
        hint = (f"the shipped run is read-only; fit it into a copy: cp -r {folder.path} runs/mine && "
                f"ensemble fuse --run runs/mine --strategy {strategy}")
    elif strategy in STRATEGIES:
        hint = f"fit it with: ensemble fuse --run {folder.path} --strategy {strategy}"
    else:
        close = difflib.get_close_matches(str(strategy), list(dict.fromkeys([*served, *STRATEGIES, CONTROL])), n=1)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        raise EnsembleError(f"--strategy: {strategy!r} is not a strategy{suggestion}; valid strategies of "
                            f"{folder.path}: {listed}")
    raise EnsembleError(f"--strategy: {strategy!r} is not available in {folder.path} (it serves: {listed}); {hint}")


#: The strategy served when a run has no evaluation report naming its best.
FALLBACK_STRATEGY = "learned"


def default_strategy(run, log=None):
    """The strategy served when none is named: the run's best by its evaluation report, else ``learned``.

    ``ensemble evaluate`` records the best strategy (highest cross-fitted headline mIoU among the
    models ``predict`` can serve) in ``RUN/evaluation/report.json``; a run not evaluated yet, or whose
    recorded best is no longer servable, gets ``learned`` when fitted, else the baseline. Says which
    to ``log``.
    """
    folder = RunFolder(run)
    report = folder.evaluation_dir / "report.json"
    best = _recorded_table(folder).get("best_strategy")
    fitted = fitted_strategies(folder.path)
    if best in servable_names(folder):
        chosen, why = best, f"the run's best by cross-fitted validation mIoU ({report})"
    else:
        chosen = FALLBACK_STRATEGY if FALLBACK_STRATEGY in fitted else (fitted[0] if fitted else BASELINE)
        why = ("no evaluation report names a best strategy" if best is None
               else f"the recorded best {best!r} is not fitted")
    if log:
        log(f"strategy {chosen}: {why}")
    return chosen


def _recorded_table(folder):
    """The ``table`` of the run's evaluation report, or ``{}`` when there is none readable."""
    report = folder.evaluation_dir / "report.json"
    if not report.is_file():
        return {}
    try:
        table = json.loads(report.read_text()).get("table", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return table if isinstance(table, dict) else {}


def default_tta(run, strategy, log=None):
    """The TTA served with ``strategy`` when none is named: flip where ``ensemble evaluate --tta-gain`` found
    its cross-fitted gain's 95 % interval above 0 for that model (``table.tta_gain`` of the run's report),
    else none. Says which and why to ``log``.
    """
    folder = RunFolder(run)
    gain = _recorded_table(folder).get("tta_gain") or {}
    row = next((r for r in gain.get("rows", []) if isinstance(r, dict) and r.get("model") == strategy), None)
    if row is None:
        chosen, why = "none", "no flip measurement recorded for it (ensemble evaluate --tta-gain)"
    else:
        chosen = "flip" if row.get("default") == "flip" else "none"
        try:
            change = (f"it changed mIoU by {row['diff']:+.4f} [95 % CI {row['low']:+.4f}, {row['high']:+.4f}]"
                      + (", an interval above 0" if chosen == "flip" else ", an interval not above 0"))
        except (KeyError, TypeError, ValueError):  # an undefined gain is stored as null
            change = "its change of mIoU is undefined"
        why = f"on the validation tiles {change} ({folder.evaluation_dir / 'report.json'})"
    if log:
        log(f"flip TTA {'served' if chosen == 'flip' else 'not served'} for {strategy}: {why}")
    return chosen
