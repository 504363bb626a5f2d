"""Recipe files (``--config FILE``): training settings in TOML or JSON, with the keys of ``--set`` and of a run's
``config.json``.

A file holds any of these, every one optional:

* ``settings``: the run's settings, as ``config.json`` records them: ``seed``, ``val_fraction``, ``objective``,
  ``drop_outliers``. They fix the split and the meaning of the networks, like ``--seed``, ``--val-fraction`` and
  ``--objective``: a run that exists keeps its own, and a file asking others is refused like those options.
* training keys for every network, as ``--set KEY=VALUE`` takes them: ``lr = 0.003``, ``model.dropout = 0.1``
  (or a ``[model]`` table), ``augment.degrade = 0.5``; ``distill.*`` keys concern the student alone.
* a table per ``--set`` scope (``[members]``, ``[multiclass]``, ``[baseline]``, ``[control]``, ``[student]``,
  ``[big_rock]``, ...) holding training keys for those networks: ``--set SCOPE:KEY=VALUE``.
* ``networks.<name>``: one network's whole config, as ``config.json`` records it. It is read the way a run reads
  its own entry (a key it lacks is the value format 1 recorded, ``ensemble.TRAIN_CONFIG_V1_DEFAULTS``), so a
  run's ``config.json`` given back reproduces that run. Its identity keys (``name``, ``target``, ``seed``,
  ``objective``, ``model.in_channels``, ``model.out_channels``) must agree with the network and the file's
  ``settings``.
* ``init_from``: a run every network starts from, like ``--init-from``.

Per network the layers are: the recipe's defaults, the preset, the file's ``networks.<name>``, its training keys,
its scope tables (in file order), ``--set``, then the explicit options (``--epochs``, ``--width``, ...).
Everything in a file is checked when it is read, before anything is written; an error names the file and the key.
"""
import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from ensemble import TRAIN_CONFIG_V1_DEFAULTS
from members.config import DISTILL_DEFAULTS, INIT_FROM_KEYS, TrainConfig
from members.overrides import SCOPES, applies, apply_overrides, checked_value, valid_keys
from members.unet import UNetConfig

from .core.augment import AugmentConfig
from .core.classes import (
    BASELINE,
    CLASS_NAMES,
    CONTROL,
    NUM_CLASSES,
    STUDENT,
    class_index,
    is_baseline_replica,
    is_control,
    is_multiclass,
)
from .core.defaults import DEFAULT_BACKEND
from .core.errors import EnsembleError
from .core.objectives import OBJECTIVES
from .core.split import VAL_FRACTION

#: The run settings a file may give, each with a check of its value (``None`` when fine, else what is expected).
SETTINGS = {
    "seed": lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "an integer >= 0",
    "val_fraction": lambda v: (None if isinstance(v, (int, float)) and not isinstance(v, bool) and 0.01 <= v <= 0.9
                               else "a number in [0.01, 0.9]"),
    "objective": lambda v: None if v in OBJECTIVES else f"one of {', '.join(OBJECTIVES)}",
    "drop_outliers": lambda v: None if isinstance(v, bool) else "true or false",
}
#: Training-config fields that are tables of their own (``model.dropout``), with their keys' defaults.
TABLES = {"model": UNetConfig().to_dict(), "augment": AugmentConfig().to_dict(), "distill": DISTILL_DEFAULTS,
          "init_from": dict.fromkeys(INIT_FROM_KEYS)}
#: Keys of a ``networks.<name>`` entry that say which network it is and which run it belongs to.
IDENTITY = ("name", "target", "seed", "objective")
#: The keys of a file besides training keys and scope tables.
TOP_KEYS = ("settings", "networks", "init_from")


@dataclass(frozen=True)
class Recipe:
    """A recipe file as read: its run ``settings``, its training keys and scope tables as ``--set``-like
    ``(scope, key, value)`` overrides in the order they apply, its ``networks`` entries (identity keys taken out,
    missing keys filled as a run reads its own), and the run its networks start from (``init_from``)."""

    path: str
    settings: dict = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    networks: dict = field(default_factory=dict)
    init_from: str | None = None

    def apply(self, values, name):
        """A copy of network ``name``'s config dict ``values`` (defaults and preset) with the file's settings for it."""
        out = copy.deepcopy(values)
        out.update(copy.deepcopy(self.networks.get(name, {})))
        try:
            return apply_overrides(out, name, [o for o in self.overrides if applies(o[0], name)])
        except ValueError as exc:
            raise self.error(f"{name}: {exc}") from None

    def error(self, message):
        """An :class:`EnsembleError` about this file."""
        return EnsembleError(f"--config {self.path}: {message}")

    def student_teacher(self):
        """The teacher the file gives the student (``distill.teacher``), or ``None``."""
        entry = self.networks.get(STUDENT, {}).get("distill", {})
        teacher = entry.get("teacher")
        for scope, key, value in self.overrides:
            if key == "distill.teacher" and applies(scope, STUDENT):
                teacher = value
        return teacher


def load_recipe(path):
    """Read and check the recipe file at ``path`` (``.toml`` or ``.json``); an :class:`EnsembleError` names the
    file, the key and what was expected."""
    path = Path(path)
    where = f"--config {path}"
    kind = {".toml": "TOML", ".json": "JSON"}.get(path.suffix.lower())
    if kind is None:
        raise EnsembleError(f"{where}: expected a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EnsembleError(f"{where}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EnsembleError(f"{where}: unreadable ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        content = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EnsembleError(f"{where}: not valid {kind} ({first})") from None
    if not isinstance(content, dict):
        raise EnsembleError(f"{where}: expected a table of keys at the top, got {type(content).__name__}")
    return _Reader(path, content).recipe()


def _templates():
    """A config dict of each kind of network, to check keys and types against: a member, a multiclass net, the
    student."""
    member = TrainConfig(name="soil", target=1, model=UNetConfig(out_channels=1).to_dict()).to_dict()
    multiclass = TrainConfig(name=BASELINE, model=UNetConfig(out_channels=NUM_CLASSES).to_dict()).to_dict()
    student = {**TrainConfig(name=STUDENT, model=multiclass["model"]).to_dict(),
               "distill": {**DISTILL_DEFAULTS, "teacher": "learned"}}
    return {"soil": member, BASELINE: multiclass, STUDENT: student}


def _network_name_ok(name):
    return (name in CLASS_NAMES or name in (BASELINE, STUDENT) or is_baseline_replica(name) or is_control(name))


def _describe(value):
    return json.dumps(value) if isinstance(value, (str, int, float, bool, list, dict, type(None))) else repr(value)


class _Reader:
    """Reads one file's content into a :class:`Recipe`, checking every key as it goes."""

    def __init__(self, path, content):
        self.path, self.content = path, content
        self.templates = _templates()

    def fail(self, key, problem):
        raise EnsembleError(f"--config {self.path}: {key}: {problem}")

    def recipe(self):
        settings = self.settings(self.content.get("settings", {}))
        top, scoped = [], []
        for key, value in self.content.items():
            if key in TOP_KEYS:
                continue
            if key in SCOPES and isinstance(value, dict):
                scoped.extend((key, k, v) for k, v in self.flatten(value, key))
            elif key in SCOPES:
                self.fail(key, f"expected a table of training keys for the scope {key}, got {_describe(value)}")
            elif key.partition(".")[0] not in TrainConfig.__dataclass_fields__:
                self.fail(key, f"unknown key; valid: the tables {', '.join(TOP_KEYS[:2])} and {', '.join(SCOPES)} "
                               f"(--set's scopes), init_from, and the training keys "
                               f"{', '.join(valid_keys(self.templates[BASELINE]))}")
            else:
                top.extend((STUDENT if k.startswith("distill.") else None, k, v) for k, v in self.flatten({key: value}))
        overrides = tuple(top + scoped)
        for scope, key, value in overrides:
            self.check_override(scope, key, value)
        networks = self.networks(self.content.get("networks", {}), settings)
        init_from = self.content.get("init_from")
        if init_from is not None and not (isinstance(init_from, str) and init_from):
            self.fail("init_from", f"expected a run folder or a shipped run's name, got {_describe(init_from)}")
        return Recipe(str(self.path), settings, overrides, networks, init_from)

    def settings(self, table):
        if not isinstance(table, dict):
            self.fail("settings", f"expected a table ({', '.join(SETTINGS)}), got {_describe(table)}")
        for key, value in table.items():
            if key not in SETTINGS:
                self.fail(f"settings.{key}", f"unknown run setting; valid: {', '.join(SETTINGS)}")
            expected = SETTINGS[key](value)
            if expected:
                self.fail(f"settings.{key}", f"expected {expected}, got {_describe(value)}")
        return dict(table)

    def flatten(self, table, scope=None):
        """``(dotted key, value)`` of the training keys of ``table`` (``[model]`` tables spelled out)."""
        prefix = f"{scope}." if scope else ""
        for key, value in table.items():
            if key in SETTINGS:
                self.fail(f"{prefix}{key}", "a run setting: give it in the settings table ([settings] in TOML)")
            if key in TOP_KEYS or (scope and key in SCOPES):
                self.fail(f"{prefix}{key}", "goes at the top of the file, not inside a table")
            if key in TABLES and isinstance(value, dict):
                for sub, item in value.items():
                    yield f"{key}.{sub}", item
            else:
                yield key, value

    def check_override(self, scope, key, value):
        """Fail unless ``key = value`` is a training setting of the networks the scope concerns."""
        where = f"[{scope}] " if scope and not key.startswith("distill.") else ""
        if key == "init_from" or key.startswith("init_from."):
            self.fail(f"{where}{key}", "give init_from at the top of the file: the run every network starts from")
        if key.startswith("distill.") and scope != STUDENT:
            self.fail(f"{where}{key}", "only the student learns from a teacher: give it at the top or in [student]")
        for name in _SCOPE_KINDS.get(scope, ("soil",)):
            try:
                TrainConfig(**apply_overrides(self.templates[name], name, [(None, key, value)])).check()
            except ValueError as exc:
                raise EnsembleError(f"--config {self.path}: {where}{exc}") from None

    def networks(self, table, settings):
        if not isinstance(table, dict):
            self.fail("networks", f"expected a table of networks by name, got {_describe(table)}")
        entries = {}
        for name, entry in table.items():
            if not _network_name_ok(name):
                self.fail(f"networks.{name}", f"unknown network; valid: {', '.join(CLASS_NAMES)}, {BASELINE}, "
                                              f"{BASELINE}_<i>, control_<i>, {STUDENT}")
            if not isinstance(entry, dict):
                self.fail(f"networks.{name}", f"expected a network's config table, got {_describe(entry)}")
            entries[name] = self.network(name, entry, settings)
        return entries

    def network(self, name, entry, settings):
        """A ``networks.<name>`` entry checked, its identity keys taken out and the keys it lacks filled in."""
        key = f"networks.{name}"
        template = self.templates[STUDENT if name == STUDENT else BASELINE if is_multiclass(name) else "soil"]
        fields = set(TrainConfig.__dataclass_fields__)
        for k, value in entry.items():
            if k not in fields:
                self.fail(f"{key}.{k}", f"unknown setting; valid: {', '.join(sorted(fields))}")
            if k in TABLES:
                if not isinstance(value, dict):
                    self.fail(f"{key}.{k}", f"expected a table ({', '.join(TABLES[k])}), got {_describe(value)}")
                for sub, item in value.items():
                    if sub not in TABLES[k]:
                        self.fail(f"{key}.{k}.{sub}", f"unknown; valid: {', '.join(TABLES[k])}")
                    if TABLES[k][sub] is not None:
                        self.checked(f"{key}.{k}.{sub}", TABLES[k][sub], item)
            elif k not in IDENTITY and template.get(k) is not None:
                self.checked(f"{key}.{k}", template[k], value)
        expected = {"name": name, "target": None if is_multiclass(name) else class_index(name)}
        for k, want in expected.items():
            if k in entry and entry[k] != want:
                self.fail(f"{key}.{k}", f"expected {_describe(want)} for network {name}, got {_describe(entry[k])}")
        for k in ("seed", "objective"):
            if k not in entry:
                continue
            if k not in settings:
                expected = SETTINGS[k](entry[k])
                if expected:
                    self.fail(f"{key}.{k}", f"expected {expected}, got {_describe(entry[k])}")
                settings[k] = entry[k]
            elif entry[k] != settings[k]:
                self.fail(f"{key}.{k}", f"{_describe(entry[k])}, but the file's settings.{k} is "
                                        f"{_describe(settings[k])}; a run's networks share its {k}")
        model = entry.get("model", {})
        channels = {"in_channels": 1, "out_channels": NUM_CLASSES if is_multiclass(name) else 1}
        for k, want in channels.items():
            if k in model and model[k] != want:
                self.fail(f"{key}.model.{k}", f"expected {want} for network {name}, got {_describe(model[k])}")
        kept = ("model", "distill", "init_from", "replica", "seed_from_name")  # the network's own unless given
        filled = {k: copy.deepcopy(v) for k, v in TRAIN_CONFIG_V1_DEFAULTS.items() if k not in IDENTITY + kept}
        filled.update({k: copy.deepcopy(v) for k, v in entry.items() if k not in IDENTITY})
        if "model" in filled:
            filled["model"] = {**template["model"], **filled["model"]}
        probe = {**template, **filled}
        try:
            TrainConfig(**probe).check()
        except ValueError as exc:
            self.fail(key, str(exc))
        return filled

    def checked(self, key, old, value):
        try:
            return checked_value(key.rpartition(".")[2], old, value)
        except ValueError as exc:
            self.fail(key, str(exc).partition(": ")[2])


#: The kinds of network (:func:`_templates`) a scope's keys are checked against; a class name's: a member's.
_SCOPE_KINDS = {None: ("soil", BASELINE), "multiclass": (BASELINE,), BASELINE: (BASELINE,),
                CONTROL: (BASELINE,), STUDENT: (STUDENT,)}


@dataclass(frozen=True)
class TrainOptions:
    """How a training command trains: what overrides the preset, the run's settings, and where and how many at once.

    Built once by the API or the CLI and passed down. ``width`` is the members' width; for a plan
    without members (``ensemble baseline``, ``ensemble control``) it is the named networks' own, and
    without it the baseline is matched to the members' parameters and the control gets their width.
    ``objective`` ``None`` keeps an existing run's (a new run gets ``competition``). ``jobs`` networks
    train at once (``None``: :func:`default_jobs`); ``backend`` is ``processes`` (forked local workers,
    :mod:`members.workers`), joblib's ``loky`` or ``threading``, or ``dask`` (the cluster at ``scheduler``);
    ``stacked`` trains the members as one grouped network in this process (:mod:`members.stacked_training`).
    Every epoch of every network redraws the run's ``progress.png``; ``tensorboard`` also logs it for TensorBoard.
    """

    preset: str = "quick"
    epochs: int | None = None
    width: int | None = None
    samples_per_epoch: int | None = None
    loss: str | None = None
    overrides: tuple = ()  # --set strings
    objective: str | None = None
    seed: int | None = 0
    val_fraction: float | None = VAL_FRACTION
    device: str = "auto"
    jobs: int | None = None
    backend: str = DEFAULT_BACKEND
    scheduler: str | None = None
    stacked: bool = False
    distill: tuple = ()  # the student's (key, value) distill settings (members.config.DISTILL_KEYS)
    tensorboard: bool = False  # also log every epoch to RUN/tensorboard/ (the optional extra)
    quiet: bool = False
    recipe: Recipe | None = None  # --config: the recipe file as read
    init_from: str | None = None  # --init-from: the run (folder or shipped name) whose best.pt each network starts from
    drop_outliers: bool | None = True

    @classmethod
    def from_arguments(cls, config=None, **fields):
        """The options of a verb's arguments: ``config`` (a recipe file's path, :mod:`ensemble.recipe`) read, and
        each run setting not given (``None``: ``seed``, ``val_fraction``, ``objective``, ``drop_outliers``) and
        ``init_from`` taken from the file, else its default. An unknown field is a ``TypeError`` naming it."""
        recipe = load_recipe(config) if config else None
        given = recipe.settings if recipe else {}
        for key, default in RUN_SETTING_DEFAULTS.items():
            if fields.get(key) is None:
                fields[key] = given.get(key, default)
        if fields.get("init_from") is None and recipe is not None:
            fields["init_from"] = recipe.init_from
        return cls(recipe=recipe, **fields)

    def __post_init__(self):
        object.__setattr__(self, "overrides", tuple(self.overrides or ()))
        distill = self.distill.items() if isinstance(self.distill, dict) else (self.distill or ())
        object.__setattr__(self, "distill", tuple(distill))

    def replace(self, **changes):
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


#: The run settings a verb may leave to the recipe file (``None``), with their values when neither gives them
#: (``objective`` ``None``: an existing run's, else the default).
RUN_SETTING_DEFAULTS = {"seed": 0, "val_fraction": VAL_FRACTION, "objective": None, "drop_outliers": True}
