"""From a run folder to verified networks: checkpoints checked against the manifest (sha256, data hash,
classes, targets, depth), the members, the multiclass nets and the control as modules images -> logits.

A *source* is what a fuser reads five logit maps from: :data:`MEMBERS` (channel k: the member of class k),
``baseline``, a replica ``baseline_1``, ..., or ``control``.
"""
import torch
from torch import nn

from fusion import load_fuser
from members.checkpoint import load_checkpoint, model_from_checkpoint
from members.stacked import StackedUNet

from ..core.classes import BASELINE, CLASS_NAMES, CONTROL, NUM_CLASSES, STUDENT, is_baseline_like, is_control
from ..core.errors import RunError
from ..core.fileio import sha256_file
from ..core.objectives import for_objective
from ..core.runfolder import METRICS, RunFolder


def check_run_data(folder, data):
    """Refuse ``data`` if the run's manifest records another data file hash."""
    manifest = folder.manifest()
    if manifest["data"]["sha256"] != data.sha256:
        raise RunError(
            f"{folder.manifest_path}: run was trained on {manifest['data']['file']} "
            f"(sha256 {manifest['data']['sha256'][:12]}…), but {data.path} has sha256 {data.sha256[:12]}…"
        )
    return manifest


#: The source name of the five members' logits (channel k: member of class k).
MEMBERS = "members"


def _network_checkpoint(folder, name):
    path = folder.best_path(name)
    if not path.exists():
        if is_baseline_like(name):
            what, verb = ("the multiclass baseline", "baseline") if name == BASELINE else \
                (f"the baseline's replica {name!r}", f"baseline --replicas {int(name.rpartition('_')[2]) + 1}")
        elif is_control(name):
            what, verb = f"control network {name!r}", "control"
        elif name == STUDENT:
            what, verb = "the distilled student", "distill"
        else:
            what, verb = f"member {name!r}", "train"
        raise RunError(f"{path}: missing; {what} has not been trained in {folder.path} (run ensemble "
                       f"{verb} --run {folder.path})")
    return path


def network_checkpoint(folder, name, epoch=None):
    """The checkpoint of network ``name``: its ``best.pt``, or with ``epoch`` the one standing for that epoch of its
    training (:func:`checkpoint_at`)."""
    return _network_checkpoint(folder, name) if epoch is None else checkpoint_at(folder, name, epoch)


def network_metrics(folder, name):
    """The network's ``metrics.json`` (its training history), or ``None`` before it has one."""
    path = folder.network_dir(name) / METRICS
    return folder.read_json(path) if path.exists() else None


def checkpoint_at(folder, name, epoch):
    """The checkpoint of network ``name`` standing for ``epoch``: its snapshot, or ``best.pt`` if it stopped before."""
    path = folder.snapshot_path(name, epoch)
    if path.exists():
        return folder.verify(path)
    metrics = network_metrics(folder, name)
    if metrics and metrics.get("finished") and metrics["epochs_run"] < epoch:
        return folder.verify(folder.best_path(name))
    raise RunError(f"{path}: missing; {name} has no snapshot for epoch {epoch} of the budget curve "
                   "(train with --set snapshot_fractions=[...] and let it finish)")


def load_network_state(folder, name, device="cpu", epoch=None):
    """A network's ``best.pt`` state (or its snapshot for ``epoch``), verified against the manifest's sha256 and
    data hash."""
    path = folder.verify(network_checkpoint(folder, name, epoch))
    state = load_checkpoint(path, map_location=device)
    trained_on = state.get("data_sha256")
    expected = folder.manifest()["data"]["sha256"]
    if trained_on is not None and trained_on != expected:
        raise RunError(
            f"{path}: was trained on data sha256 {trained_on[:12]}…, but the run's data is {expected[:12]}…; "
            "networks from different data files cannot be combined"
        )
    return path, state


def load_run_fuser(run, strategy):
    """The fitted fuser ``RUN/fusion/<strategy>.pt``, verified against the manifest's sha256."""
    folder = RunFolder(run)
    path = folder.fuser_path(strategy)
    if not path.exists():
        raise RunError(f"{path}: missing; fit it with: ensemble fuse --run {folder.path} --strategy {strategy}")
    return load_fuser(folder.verify(path))


def channels_last(model):
    """``model`` with its weights in channels-last memory layout (in place; returned for chaining): oneDNN's CPU
    convolutions run the U-Nets faster in it at inference batch sizes (docs/performance.md); the outputs agree
    within float rounding."""
    return model.to(memory_format=torch.channels_last)


def load_members(run, device="cpu", epoch=None):
    """The five members of ``run`` (at ``epoch`` of their training when given) as a list of eval-mode U-Nets in
    class order, checked for consistency."""
    folder = RunFolder(run)
    manifest = folder.manifest()
    if manifest.get("classes") != list(CLASS_NAMES):
        raise RunError(f"{folder.manifest_path}: classes {manifest.get('classes')} differ from {list(CLASS_NAMES)}")
    models = []
    for target, name in enumerate(CLASS_NAMES):
        path, state = load_network_state(folder, name, device, epoch)
        if state.get("target") != target or state["model_config"].get("out_channels") != 1:
            raise RunError(f"{path}: is not the one-vs-rest member for class {target} ({name})")
        models.append(model_from_checkpoint(state, device))
    depths = {m.config.depth for m in models}
    if len(depths) != 1:
        raise RunError(f"{folder.path}: members have different depths {sorted(depths)}; retrain them together")
    return models


def load_multiclass(run, name, device="cpu", epoch=None):
    """Multiclass net ``name`` of ``run`` (at ``epoch`` when given; eval mode, channels-last), emitting class logits
    as its objective implies.

    Under ``competition`` its class-0 logit is -inf (:func:`~ensemble.core.objectives.for_objective`):
    it was trained over classes 1-4 and never predicts 0.
    """
    folder = RunFolder(run)
    path, state = load_network_state(folder, name, device, epoch)
    if state["model_config"].get("out_channels") != NUM_CLASSES:
        raise RunError(f"{path}: is not a {NUM_CLASSES}-class network")
    return for_objective(channels_last(model_from_checkpoint(state, device)), folder.objective())


class SoftmaxAverage(nn.Module):
    """Multiclass networks averaged by softmax (nnU-Net's way): class logits = log of the mean probabilities.

    A class every network gives probability 0 (class 0 under ``competition``) gets logit -inf.
    """

    def __init__(self, models):
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x):
        """Class logits (B, C, H, W): the log of the networks' mean softmax."""
        return torch.log(torch.stack([torch.softmax(m(x), dim=1) for m in self.models]).mean(0))


def load_control(run, device="cpu", epoch=None):
    """The ensembling control of ``run``: its multiclass networks averaged by softmax (:class:`SoftmaxAverage`)."""
    folder = RunFolder(run)
    names = folder.control_names()
    if not names:
        raise RunError(f"{folder.path}: has no ensembling control; train it with: ensemble control --run {folder.path}")
    return SoftmaxAverage([load_multiclass(run, name, device, epoch) for name in names]).eval()


def source_networks(folder, source):
    """The networks behind a source: the five members, the control's nets, or the one multiclass net."""
    if source == MEMBERS:
        return list(CLASS_NAMES)
    if source == CONTROL:
        return folder.control_names()
    return [source]


def available_sources(folder):
    """The sources ``folder`` has trained: members, baseline, its replicas, the student, control (each when
    present)."""
    found = [MEMBERS] if all(folder.best_path(n).exists() for n in CLASS_NAMES) else []
    found += [BASELINE] if folder.best_path(BASELINE).exists() else []
    found += folder.baseline_replica_names()
    found += [STUDENT] if folder.best_path(STUDENT).exists() else []
    return found + ([CONTROL] if folder.control_names() else [])


def load_source(folder, source, device="cpu", stack=False, epoch=None):
    """The module images -> five logit maps of ``source`` (members stacked or one by one; at ``epoch`` when given)."""
    if source == MEMBERS:
        return members_forward(load_members(folder.path, device, epoch), stack)
    if source == CONTROL:
        return load_control(folder.path, device, epoch)
    return load_multiclass(folder.path, source, device, epoch)


def check_tile_shape(folder, shape):
    """Refuse images whose tile size differs from the one the run was trained on."""
    trained = tuple(folder.manifest()["data"]["tile_shape"])
    if tuple(shape) != trained:
        raise RunError(
            f"{folder.path}: networks were trained on {trained[0]}x{trained[1]} tiles, "
            f"but the images are {shape[0]}x{shape[1]}"
        )


class MembersOneByOne(nn.Module):
    """Networks run one after the other on the same images, their logits concatenated: (B, K, H, W).

    The members one by one (K = 5), or several sources side by side for a fuser that reads them all.
    """

    def __init__(self, models):
        super().__init__()
        self.members = nn.ModuleList(models)

    def forward(self, x):
        """Logits (B, K, H, W) in the order of the networks."""
        return torch.cat([m(x) for m in self.members], dim=1)


def concatenated(forwards):
    """One callable images -> the concatenated logits of ``forwards`` (itself when there is one)."""
    if len(forwards) == 1:
        return forwards[0]
    return lambda x: torch.cat([forward(x) for forward in forwards], dim=1)


def members_forward(models, stack=True):
    """One module images -> member logits (B, K, H, W): the members stacked into one grouped network
    (:meth:`~members.stacked.StackedUNet.for_inference`), or, with ``stack=False``, run one by one
    (channels-last, in place)."""
    if stack:
        return StackedUNet.from_members(models).for_inference()
    return MembersOneByOne([channels_last(m) for m in models]).eval()


def network_hashes(folder, names):
    """``{name: sha256}`` of the networks' ``best.pt``."""
    return {name: sha256_file(_network_checkpoint(folder, name)) for name in names}
