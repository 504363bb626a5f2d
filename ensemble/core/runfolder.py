"""The run folder: ``config.json``, ``manifest.json`` (data hash, split, versions, seed) and the networks.

Layout::

    RUN/config.json                   run settings and every network's training config
    RUN/manifest.json                 format version, data file hash, split, package versions, seed
    RUN/members/<class>/{best.pt,latest.pt,metrics.json}
    RUN/baseline/{best.pt,latest.pt,metrics.json}
    RUN/baseline_<i>/...              the baseline's replicas (another seed each), when trained
    RUN/control/control_<i>/...       the ensembling control's networks, when trained
    RUN/cache/                        cached validation logits of the members (and the other sources) for fusion;
                                      cache/onnx/: ONNX graphs for onnxruntime;
                                      cache/checksums.json: the sha256 of every cached graph
    RUN/fusion/<strategy>.pt          fitted fusers
    RUN/input_stats.json              the training tiles' image statistics and the thresholds of predict's input
                                      check (:mod:`ensemble.core.imagestats`)
    RUN/MODEL_CARD.md                 the model card (``scripts/model_card.py``), when one was written
    RUN/<network>/history.csv         one row per finished epoch, rewritten after each (:mod:`ensemble.core.history`)
    RUN/progress.png                  every network's curves, redrawn after each epoch
    RUN/logs/<verb>-<time>.log        each verb's messages with UTC timestamps (:mod:`ensemble.core.logs`)
    RUN/tensorboard/                  TensorBoard logs, with --tensorboard
"""
import contextlib
import copy
import fcntl
import json
from pathlib import Path

from ensemble import FORMAT_VERSION

from .classes import BASELINE, CONTROL, is_baseline_replica, is_control
from .errors import RunError
from .fileio import sha256_file, write_json_atomic
from .imagestats import InputRange
from .locations import DEFAULT_RUN, SHIPPED_REPORTS, is_shipped, shipped_cache_dir
from .objectives import OBJECTIVES

#: Settings that fix the split and the meaning of the networks; a run folder keeps them for life.
RUN_KEYS = ("seed", "val_fraction", "objective", "drop_outliers")

# Every file name of a run folder is spelled here and nowhere else.
CONFIG = "config.json"
MANIFEST = "manifest.json"
#: In each network's folder: the best validation epoch, the resume state, the finished metrics.
BEST = "best.pt"
LATEST = "latest.pt"
#: Per network: copies of ``best.pt`` as it stood at the budget-curve epochs (``snapshots/epoch_007.pt``).
SNAPSHOT_DIR = "snapshots"
METRICS = "metrics.json"
BASELINE_DIR = "baseline"
MEMBERS_DIR = "members"
CONTROL_DIR = CONTROL
FUSION_DIR = "fusion"
FUSER_SUFFIX = ".pt"
CACHE_DIR = "cache"
#: The logits cache: member logits of the validation tiles, their tile ids, and what they were made from.
CACHE_LOGITS = "val_logits.npy"
CACHE_IDS = "val_tile_ids.npy"
CACHE_META = "val_cache.json"
#: ONNX graphs of the run's networks for onnxruntime (``cache/onnx/<name>.onnx``) and what each was made from.
ONNX_DIR = "onnx"
ONNX_SUFFIX = ".onnx"
ONNX_META_SUFFIX = ".json"
#: The cache's own checksums (``cache/checksums.json``): derived files are verified like checkpoints, but
#: recorded beside them, so deleting ``cache/`` forgets them and building one never rewrites ``manifest.json``
#: (a run under version control, like ``models/reference``, stays unmodified when a command caches a graph).
CACHE_CHECKSUMS = "checksums.json"
EVALUATION_DIR = "evaluation"
#: The training tiles' image statistics (quantiles and thresholds) that ``predict`` checks its inputs against.
INPUT_STATS = "input_stats.json"
#: The run's model card, generated from its files by ``scripts/model_card.py``; no verb reads it.
MODEL_CARD = "MODEL_CARD.md"
LOCK = ".manifest.lock"
#: In each network's folder: one row per finished epoch (:mod:`ensemble.core.history`), and the lock held while a
#: process trains it.
HISTORY_CSV = "history.csv"
TRAINING_LOCK = ".training.lock"
#: The run's training curves, redrawn after every epoch; its TensorBoard logs (``--tensorboard``); every verb's
#: timestamped log file (``logs/<verb>-<time>.log``).
PROGRESS_PNG = "progress.png"
TENSORBOARD_DIR = "tensorboard"
LOG_DIR = "logs"

#: Parsed manifests by path, reused while the file's (mtime, size) is unchanged: one parse per command.
_MANIFESTS = {}


def snapshot_file(network_dir, epoch):
    """``<network_dir>/snapshots/epoch_<epoch>.pt``."""
    return Path(network_dir) / SNAPSHOT_DIR / f"epoch_{int(epoch):03d}.pt"


class RunFolder:
    """Paths and JSON files of one run folder."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def config_path(self):
        """``RUN/config.json``."""
        return self.path / CONFIG

    @property
    def manifest_path(self):
        """``RUN/manifest.json``."""
        return self.path / MANIFEST

    def network_dir(self, name):
        """Folder of a member (by class name), of ``"baseline"``, a baseline replica or a control network."""
        if name == BASELINE:
            return self.path / BASELINE_DIR
        if is_baseline_replica(name):
            return self.path / name
        if is_control(name):
            return self.path / CONTROL_DIR / name
        return self.path / MEMBERS_DIR / name

    def best_path(self, name):
        """``best.pt`` of a member (by class name) or of ``"baseline"``."""
        return self.network_dir(name) / BEST

    def snapshot_path(self, name, epoch):
        """``snapshots/epoch_<epoch>.pt`` of a network: its ``best.pt`` as it stood after ``epoch``."""
        return snapshot_file(self.network_dir(name), epoch)

    def snapshot_epochs(self, name):
        """Epochs with a snapshot of network ``name``, ascending."""
        folder = self.network_dir(name) / SNAPSHOT_DIR
        return sorted(int(p.stem.split("_")[1]) for p in folder.glob("epoch_*.pt")) if folder.is_dir() else []

    def baseline_replica_names(self):
        """Names of the baseline's replicas with a ``best.pt`` in the run (``baseline_1``, ...), in index order."""
        names = [p.name for p in self.path.glob(f"{BASELINE}_*") if is_baseline_replica(p.name)
                 and (p / BEST).is_file()] if self.path.is_dir() else []
        return sorted(names, key=lambda n: int(n.rpartition("_")[2]))

    def control_names(self):
        """Names of the control networks with a folder in the run, in index order."""
        folder = self.path / CONTROL_DIR
        names = [p.name for p in folder.iterdir() if p.is_dir() and is_control(p.name)] if folder.is_dir() else []
        return sorted(names, key=lambda n: int(n.rpartition("_")[2]))

    @property
    def read_only(self):
        """True for a shipped run (:func:`~ensemble.core.locations.is_shipped`): no verb writes into it."""
        return is_shipped(self.path)

    def check_writable(self, action):
        """Refuse to ``action`` (for example ``"train"``) into a shipped run, naming what to do instead."""
        if self.read_only:
            raise RunError(f"{self.path}: a shipped run is read-only, so it cannot {action}; work in a run of your "
                           f"own (--run {DEFAULT_RUN}, or a copy: cp -r {self.path} runs/mine)")

    @property
    def cache_dir(self):
        """``RUN/cache``; for a read-only (shipped) run a folder of the user's cache instead."""
        return shipped_cache_dir(self.path) if self.read_only else self.path / CACHE_DIR

    def onnx_path(self, name):
        """``cache/onnx/<name>.onnx``: an ONNX graph of some of the run's networks."""
        return self.cache_dir / ONNX_DIR / f"{name}{ONNX_SUFFIX}"

    def onnx_meta_path(self, name):
        """``cache/onnx/<name>.json``: the checkpoints (sha256) the graph ``name`` was made from."""
        return self.cache_dir / ONNX_DIR / f"{name}{ONNX_META_SUFFIX}"

    def relative(self, path):
        """``path`` as the checksums key it: relative to the run (a cached file as ``cache/...`` wherever the
        cache is), with forward slashes."""
        if self.in_cache(path):
            return f"{CACHE_DIR}/{Path(path).relative_to(self.cache_dir).as_posix()}"
        return Path(path).relative_to(self.path).as_posix()

    @property
    def cache_checksums_path(self):
        """``cache/checksums.json``: sha256 of the cached files, keyed like the manifest's checksums."""
        return self.cache_dir / CACHE_CHECKSUMS

    def in_cache(self, path):
        """True for a file inside ``RUN/cache``."""
        return self.cache_dir in Path(path).parents

    def cache_path(self, which, source="members"):
        """A file of the logits cache: ``which`` is ``"logits"``, ``"ids"`` or ``"meta"``, of the members' logits
        or of another source's (``baseline``, ``baseline_1``, ...: ``val_logits_<source>.npy``)."""
        name = {"logits": CACHE_LOGITS, "ids": CACHE_IDS, "meta": CACHE_META}[which]
        if source != "members" and which != "ids":  # one tile-id file: every source caches the same tiles
            stem, _, suffix = name.rpartition(".")
            name = f"{stem}_{source}.{suffix}"
        return self.cache_dir / name

    @property
    def fusion_dir(self):
        """``RUN/fusion``."""
        return self.path / FUSION_DIR

    def fuser_path(self, strategy):
        """``RUN/fusion/<strategy>.pt``."""
        return self.fusion_dir / f"{strategy}{FUSER_SUFFIX}"

    def fuser_names(self):
        """Names of the fusers saved in ``RUN/fusion`` (unsorted)."""
        if not self.fusion_dir.is_dir():
            return []
        return [p.stem for p in self.fusion_dir.glob(f"*{FUSER_SUFFIX}") if p.is_file()]

    @property
    def input_stats_path(self):
        """``RUN/input_stats.json``: the training tiles' image statistics, written when the run is planned."""
        return self.path / INPUT_STATS

    def write_input_stats(self, content):
        """Write ``input_stats.json`` (:func:`~ensemble.core.imagestats.training_statistics`) atomically and record
        its sha256 in the manifest."""
        write_json_atomic(self.input_stats_path, content)
        self.record_checksums([self.input_stats_path])

    def input_range(self):
        """The run's :class:`~ensemble.core.imagestats.InputRange` (``input_stats.json``, verified against the
        manifest's sha256 when one is recorded), or ``None`` for a run without the file."""
        path = self.input_stats_path
        if not path.is_file():
            return None
        self.verify(path)
        try:
            return InputRange(self.read_json(path), path)
        except ValueError as exc:
            raise RunError(str(exc)) from None

    @property
    def evaluation_dir(self):
        """``RUN/evaluation``: the run's report, which ``predict`` reads the served defaults from."""
        return self.path / EVALUATION_DIR

    @property
    def report_dir(self):
        """Where ``evaluate`` writes by default: ``RUN/evaluation``, or ``runs/evaluations/<name>`` for a
        read-only (shipped) run."""
        return SHIPPED_REPORTS / self.path.name if self.read_only else self.evaluation_dir

    def read_json(self, path):
        """Read a JSON file of the run; a missing or broken file raises :class:`RunError`."""
        try:
            return json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise RunError(f"{path}: not found; is {self.path} a run folder?") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(f"{path}: not valid JSON ({exc})") from None

    def manifest(self, fresh=False):
        """The manifest dict, checked for a readable format version.

        Parsed once per command: the parsed dict is reused while the file's modification time
        and size are unchanged (callers get their own copy); ``fresh=True`` always rereads it.
        """
        key = str(self.manifest_path.resolve())
        try:
            stat = self.manifest_path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        cached = _MANIFESTS.get(key)
        if not fresh and stamp is not None and cached is not None and cached[0] == stamp:
            return copy.deepcopy(cached[1])
        manifest = self.read_json(self.manifest_path)
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise RunError(
                f"{self.manifest_path}: format version {version!r} is not readable by this tool "
                f"(reads up to {FORMAT_VERSION}); upgrade the package"
            )
        if stamp is not None:
            _MANIFESTS[key] = (stamp, copy.deepcopy(manifest))
        return manifest

    def objective(self):
        """The run's objective (:mod:`ensemble.core.objectives`), recorded in the manifest at ``train`` time."""
        objective = self.manifest()["settings"].get("objective")
        if objective not in OBJECTIVES:
            raise RunError(f"{self.manifest_path}: settings.objective is {objective!r}; expected one of "
                           f"{', '.join(OBJECTIVES)}")
        return objective

    def config(self):
        """The config dict."""
        return self.read_json(self.config_path)

    @contextlib.contextmanager
    def locked_manifest(self):
        """Yield the manifest dict under an exclusive lock; it is written back (atomically) on exit."""
        with self._lock():
            manifest = self.manifest(fresh=True)  # another process may have written it a moment ago
            yield manifest
            write_json_atomic(self.manifest_path, manifest)

    @contextlib.contextmanager
    def _lock(self):
        """An exclusive lock on the run's checksum files (``RUN/.manifest.lock``; in the cache for a read-only
        run), across processes."""
        where = self.cache_dir if self.read_only else self.path
        where.mkdir(parents=True, exist_ok=True)
        with open(where / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def record_checksums(self, paths):
        """Record the sha256 of each file in ``paths``, keyed by its path inside the run.

        Files of the run go into the manifest; files inside ``RUN/cache`` into ``cache/checksums.json``.
        """
        cached = [path for path in paths if self.in_cache(path)]
        run_files = [path for path in paths if not self.in_cache(path)]
        if run_files:
            with self.locked_manifest() as manifest:
                manifest.setdefault("checksums", {}).update({self.relative(p): sha256_file(p) for p in run_files})
        if cached:
            with self._lock():
                checksums = self._cache_checksums()
                checksums.update({self.relative(path): sha256_file(path) for path in cached})
                write_json_atomic(self.cache_checksums_path, {"checksums": checksums})

    def _cache_checksums(self):
        """The recorded checksums of cached files (empty when ``cache/checksums.json`` is missing or unreadable:
        every cached file is then rebuilt)."""
        try:
            checksums = json.loads(self.cache_checksums_path.read_text()).get("checksums", {})
        except (OSError, ValueError, AttributeError):
            return {}
        return checksums if isinstance(checksums, dict) else {}

    def recorded_checksum(self, path):
        """The sha256 recorded for ``path`` (in the manifest, or in the cache's checksums), or ``None``."""
        source = self._cache_checksums() if self.in_cache(path) else self.manifest().get("checksums", {})
        return source.get(self.relative(path))

    def checksum_required(self, path):
        """True when the run must hold a checksum for ``path``.

        That is a fitted fuser ``fusion/<strategy>.pt`` (recorded when it is saved), and the
        ``best.pt`` and snapshots of a finished network (its ``metrics.json`` says finished;
        recorded when training ends). Other files, such as the checkpoints of a network still training, need none.
        """
        path = Path(path)
        if path.parent == self.fusion_dir and path.suffix == FUSER_SUFFIX:
            return True
        if path.parent == self.cache_dir / ONNX_DIR and path.suffix == ONNX_SUFFIX:
            return True  # recorded when exported
        if path.parent.name == SNAPSHOT_DIR:  # a snapshot of a finished network: recorded when training ends
            metrics_path = path.parent.parent / METRICS
        elif path.name == BEST:
            metrics_path = path.parent / METRICS
        else:
            return False
        if not metrics_path.exists():
            return False
        metrics = self.read_json(metrics_path)
        return isinstance(metrics, dict) and bool(metrics.get("finished"))

    def verify(self, path):
        """Check ``path`` against the sha256 recorded for it (:meth:`recorded_checksum`); a mismatch raises
        :class:`RunError`.

        A file the run must hold a checksum for (:meth:`checksum_required`) whose entry is
        missing is refused too. Other files without an entry (not yet finished) pass.
        """
        expected = self.recorded_checksum(path)
        where = self.cache_checksums_path if self.in_cache(path) else self.manifest_path
        if expected is None:
            if self.checksum_required(path):
                raise RunError(
                    f"{path}: no sha256 recorded for it in {where}, so it cannot be verified; "
                    "the manifest was edited or replaced, or the file was copied in (retrain or refit it)"
                )
        elif sha256_file(path) != expected:
            raise RunError(
                f"{path}: sha256 differs from the one recorded in {where} when it was written; "
                "the file is corrupted or was replaced (retrain it, or restore the original)"
            )
        return path
