"""Recipe overrides: ``[SCOPE:]KEY=VALUE`` settings applied to networks' training configs.

``KEY`` names a :class:`~members.config.TrainConfig` field, or a field inside one of its dicts
with a dot (``model.dropout``, ``augment.rotate_degrees``). ``VALUE`` is read as JSON (``0.2``,
``true``, ``null``, ``"cosine"``) or else taken as a string (``cosine``), and must have the
field's type (an int where a float is expected is fine). ``SCOPE`` limits the setting to some
networks: ``members`` (the one-vs-rest members), ``multiclass`` (the baseline and the control's
networks), ``baseline`` (with its replicas), ``control`` or a member's class name (``big_rock``); without one it
applies to every network. Later overrides win over earlier ones.

Overrides apply after the preset's fields (:mod:`members.presets`).
"""
import json

from ensemble.core.classes import BASELINE, CLASS_NAMES, CONTROL, STUDENT, is_baseline_like, is_control, is_multiclass

#: Fields an override may not change: identity, the run's settings, the data's shape, the starting weights
#: (``--init-from`` sets those).
FIXED = ("name", "target", "replica", "seed", "seed_from_name", "objective", "model.in_channels", "model.out_channels",
         "init_from", "init_from.run", "init_from.sha256")
SCOPES = ("members", "multiclass", BASELINE, CONTROL, STUDENT, *CLASS_NAMES)


def parse_override(text):
    """``"[SCOPE:]KEY=VALUE"`` -> ``(scope or None, key, value)``; ``ValueError`` says what is wrong."""
    if "=" not in text:
        raise ValueError(f"{text!r}: expected [SCOPE:]KEY=VALUE, e.g. ema_decay=0.999 or baseline:sampler_weight=4")
    left, raw = text.split("=", 1)
    scope, _, key = left.rpartition(":")
    scope, key = scope.strip() or None, key.strip()
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"{text!r}: unknown scope {scope!r}; valid: {', '.join(SCOPES)}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw.strip()
    return scope, key, value


def applies(scope, name):
    """True when an override of ``scope`` (``None``: every network) concerns network ``name``."""
    if scope is None:
        return True
    if scope == "members":
        return not is_multiclass(name)
    if scope == "multiclass":
        return is_multiclass(name)
    if scope == CONTROL:
        return is_control(name)
    if scope == BASELINE:  # the baseline's replicas train exactly like it
        return is_baseline_like(name)
    return scope == name


def checked_value(key, old, value):
    """``value`` converted to the type of the field's current value ``old``, else ``ValueError``."""
    if isinstance(old, bool) or isinstance(value, bool):
        if isinstance(old, bool) and isinstance(value, bool):
            return value
    elif isinstance(old, float) and isinstance(value, (int, float)):
        return float(value)
    elif old is None or value is None or type(old) is type(value):
        return value
    raise ValueError(f"{key}={json.dumps(value)}: expected a {type(old).__name__} like {json.dumps(old)}")


def apply_overrides(config_dict, name, overrides):
    """A copy of the training config dict of network ``name`` with the ``overrides`` that apply to it.

    ``overrides`` holds ``(scope, key, value)`` tuples (:func:`parse_override`). An unknown or fixed
    key, or a value of the wrong type, raises ``ValueError`` naming it and the valid keys.
    """
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config_dict.items()}
    for scope, key, value in overrides:
        if key in FIXED:
            raise ValueError(f"{key}: fixed by the run or the network, not a recipe setting")
        head, _, tail = key.partition(".")
        target = out.get(head)
        if head not in out or (tail and not isinstance(target, dict)) or (tail and tail not in target) or (
                not tail and isinstance(target, dict)):
            raise ValueError(f"{key}: unknown setting; valid: {', '.join(valid_keys(config_dict))}")
        if not applies(scope, name):
            continue
        if tail:
            target[tail] = checked_value(key, target[tail], value)
        else:
            out[head] = checked_value(key, target, value)
    return out


def valid_keys(config_dict):
    """Every key an override may set in ``config_dict``, dotted for nested fields."""
    keys = []
    for k, v in config_dict.items():
        keys.extend(f"{k}.{sub}" for sub in v) if isinstance(v, dict) else keys.append(k)
    return [k for k in keys if k not in FIXED]
