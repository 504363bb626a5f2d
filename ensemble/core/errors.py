"""Exceptions the tool raises for bad input; the CLI turns them into exit status 2."""
import re


class EnsembleError(Exception):
    """A user-facing error: the message names the file, key or option and what was expected."""


class DataError(EnsembleError):
    """A data file is missing, unreadable or not in the Kaggle Mars layout."""


class RunError(EnsembleError):
    """A run folder is missing parts, inconsistent or corrupted."""


#: CLI options whose Python argument has another name.
_ARGUMENT_NAMES = {"png": "png_dir", "uncertainty": "uncertainty_dir", "masks": "masks_dir", "overlay": "overlay_dir",
                   "set": "overrides", "control": "with_control",
                   "no-stack": "stack"}
#: An option, with its value when one follows before a colon (``--cross-fit 1:``), as a metavar (``--data PATH``)
#: or as a path (``--run runs/default``).
_OPTION = re.compile(r"--([a-z][a-z0-9-]*)(?: ([^\s:;,()]+)(?=:)| ([A-Z][A-Z_]*)\b| ([^\s;,()]*/[^\s;,()]*))?")


def in_argument_words(message):
    """``message`` as a Python caller reads it: each CLI option it names (``--cross-fit 1: ...``) becomes the
    argument (``cross_fit=1: ...``); options inside a suggested ``ensemble ...`` command stay as they are."""
    out, start = [], 0
    for match in _OPTION.finditer(message):
        clause = message[: match.start()].rsplit(";", 1)[-1]
        if "ensemble " in clause:  # part of a command to run: the CLI's own words
            continue
        name = _ARGUMENT_NAMES.get(match[1], match[1].replace("-", "_"))
        value = match[2] or match[3] or match[4]
        out += [message[start : match.start()], name if value is None else f"{name}={value}"]
        start = match.end()
    return "".join(out) + message[start:]
