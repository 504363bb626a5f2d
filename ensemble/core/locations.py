"""Where a command finds things: the run it works on, the shipped runs, the data file and the user's cache.

One rule for ``--run`` in every verb (:func:`resolve_run`):

* ``--run PATH`` is that folder; ``--run reference`` (or ``fullmask``) names a shipped run when no
  folder of that name exists in the working directory.
* Without ``--run`` every verb works on :data:`DEFAULT_RUN` (``runs/default``), so ``train``,
  ``baseline``, ``fuse``, ``evaluate`` and ``predict`` with their defaults agree on one run. Only the
  verbs that need a trained run to make sense (``evaluate``, ``predict``, ``export``, the notebook
  predictor) fall back to the shipped reference run while ``runs/default`` holds no run. The folder
  used is said when it was not named.

Shipped runs are read-only: the checkout's ``models/`` in a development install, the package data
``ensemble/shipped/`` of an installed one. What a command derives from them (ONNX graphs, logits
caches) goes to the user's cache (:func:`user_cache_dir`), reports to ``runs/evaluations/<name>``.
"""
import hashlib
import os
from pathlib import Path

from .errors import RunError
from .fileio import unusable_output

#: The project checkout (or, installed, the site-packages folder holding the package).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: The run every verb works on when ``--run`` is not given.
DEFAULT_RUN = Path("runs") / "default"
#: Reports of ``ensemble evaluate`` on a shipped run, which is never written to: ``runs/evaluations/<name>``.
SHIPPED_REPORTS = Path("runs") / "evaluations"
#: The shipped run served when the user has none.
REFERENCE = "reference"
#: Environment variables: the data file, and the cache folder for what is derived from shipped runs.
DATA_ENV = "MARS_DATA"
CACHE_ENV = "MARS_ENSEMBLE_CACHE"
DEFAULT_DATA_NAME = "ai4mars-64x128.npz"


def is_checkout():
    """True when the package runs from a source checkout (an editable install or the tests), not site-packages."""
    return (PROJECT_ROOT / "setup.py").is_file() and (PROJECT_ROOT / "ensemble").is_dir()


def shipped_root():
    """The folder of the shipped runs: the checkout's ``models/``, else the installed ``ensemble/shipped/``."""
    if is_checkout():
        return PROJECT_ROOT / "models"
    return Path(__file__).resolve().parents[1] / "shipped"


def shipped_names():
    """Names of the shipped runs (folders of :func:`shipped_root` with a manifest)."""
    root = shipped_root()
    return sorted(p.name for p in root.iterdir() if _is_run(p)) if root.is_dir() else []


def shipped_run(name=REFERENCE):
    """The folder of the shipped run ``name``."""
    return shipped_root() / name


def is_shipped(path):
    """True for a folder that is one of the shipped runs (read-only to every verb)."""
    try:
        return Path(path).resolve().parent == shipped_root().resolve()
    except OSError:
        return False


def _is_run(path):
    """True for a folder holding a run's manifest."""
    from .runfolder import MANIFEST  # the run folder's file names live there; it imports this module

    return (Path(path) / MANIFEST).is_file()


def resolve_run(run=None, trained=False, log=None):
    """The run folder a verb works on, by the module's rule; said to ``log`` when ``run`` was not a path given.

    ``trained``: the verb needs a trained run (evaluate, predict, export), so without ``run`` the shipped
    reference run serves while :data:`DEFAULT_RUN` holds none. Raises :class:`RunError` when that is needed
    and no shipped run is installed.
    """
    if run:
        if not Path(run).exists() and str(run) in shipped_names():
            path = shipped_run(str(run))
            if log:
                log(f"--run {run}: the shipped run {path} (read-only)")
            return str(path)
        check_run_path(run)
        return str(run)
    if not trained or _is_run(DEFAULT_RUN):
        if log:
            log(f"using {DEFAULT_RUN} (no --run given)")
        return str(DEFAULT_RUN)
    reference = shipped_run(REFERENCE)
    if not _is_run(reference):
        raise RunError(f"no run given, no run in {DEFAULT_RUN} and no shipped reference run at {reference}; "
                       "train one with: ensemble run")
    if log:
        log(f"no --run given and no run in {DEFAULT_RUN} yet: using the shipped reference run {reference} "
            "(--run reference)")
    return str(reference)


def check_run_path(run):
    """Refuse a ``--run`` that is a file or lies under one, before a verb reads data or writes anything (``None``,
    the default run, and a shipped run's name pass)."""
    if not run or (not Path(run).exists() and str(run) in shipped_names()):
        return
    reason = unusable_output(run, folder=True, writable=False)
    if reason is not None:
        raise RunError(f"--run {run}: {reason}; expected a run folder")


def user_cache_dir():
    """Where files derived from read-only runs go: ``$MARS_ENSEMBLE_CACHE``, else ``$XDG_CACHE_HOME/mars-ensemble``,
    else ``~/.cache/mars-ensemble``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ["XDG_CACHE_HOME"]) if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "mars-ensemble"


def shipped_cache_dir(path):
    """The cache folder of a shipped run: one per installed copy (the folder's name and a hash of its path)."""
    path = Path(path).resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return user_cache_dir() / f"{path.name}-{digest}"


def data_candidates():
    """Where the data file is looked for when neither ``--data`` nor ``$MARS_DATA`` names it: ``../shared/data/``
    beside the checkout (a development install), then beside the working directory."""
    bases = ([PROJECT_ROOT] if is_checkout() else []) + [Path.cwd()]
    return list(dict.fromkeys(base.parent / "shared" / "data" / DEFAULT_DATA_NAME for base in bases))
