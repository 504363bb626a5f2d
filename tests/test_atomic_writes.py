"""Every writer survives a full disk mid-write: the previous file stays intact and no temporary file is left.

Each writer first writes its file once (the "previous" version, of N bytes); then the disk fills up after
N // 2 bytes of the next write: every ``open`` for writing under the test's folder returns a file whose
``write`` stores what fits and raises ``OSError(ENOSPC)``. A writer that wrote in place would leave half a
file; one that left its temporary file behind would leave an extra name; one that wrote through something
other than a temporary file beside the target would not fail at all. Checkpoints and exported programs,
written by torch below Python's ``open``, get a real write failure from the kernel instead (a file-size limit,
in a child process).
"""
import builtins
import errno
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_run

from ensemble import api
from ensemble.core.data import load_data, tile_ids
from ensemble.core.imagestats import training_statistics
from ensemble.core.metrics import per_tile_confusion
from ensemble.core.runfolder import RunFolder
from ensemble.core.runsetup import record_network_config
from ensemble.evaluation.table import build_table
from ensemble.inference import cached_val_logits
from ensemble.predict import write_summary
from ensemble.reporting.figures import confusion_png, write_class_png, write_mask_png, write_overlay_png
from ensemble.reporting.report import write_report
from ensemble.reporting.submission import SubmissionWriter
from fusion import get_fuser


class _FullDiskFile:
    """A file opened for writing on a disk with ``room`` bytes left: writes past it raise ENOSPC."""

    def __init__(self, fh, room, opened):
        self._fh, self._room, self._opened = fh, room, opened

    def write(self, data):
        size = len(memoryview(data).cast("B")) if not isinstance(data, str) else len(data)
        if size > self._room:
            self._fh.write(data[: self._room] if isinstance(data, (bytes, str)) else bytes(data)[: self._room])
            self._opened[-1][1] += self._room
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= size
        self._opened[-1][1] += size
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def __iter__(self):
        return iter(self._fh)


@pytest.fixture
def disk_full_after(monkeypatch):
    """``disk_full_after(folder, room)``: from now on, writes under ``folder`` fail after ``room`` bytes.

    Returns the list of ``[path, bytes written]`` of every file opened for writing there.
    """
    real_open = builtins.open

    def install(folder, room):
        folder, opened = Path(folder).resolve(), []

        def full_open(file, mode="r", *args, **kwargs):
            fh = real_open(file, mode, *args, **kwargs)
            if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+"):
                path = Path(file).resolve()
                if folder in path.parents and not path.name.endswith(".lock"):
                    opened.append([path, 0])
                    return _FullDiskFile(fh, room, opened)
            return fh

        monkeypatch.setattr(builtins, "open", full_open)
        monkeypatch.setattr(io, "open", full_open)
        return opened

    return install


def _check_survives(write, target, disk_full_after, between=None):
    """Write ``target`` once; write again on a disk that fills up halfway; the first version must survive."""
    target = Path(target)
    write(0)
    if between:
        between()
    before = target.read_bytes()
    names = sorted(p.name for p in target.parent.iterdir())
    opened = disk_full_after(target.parent, len(before) // 2)
    with pytest.raises(OSError) as failure:
        write(1)
    assert "No space left on device" in str(failure.value)
    assert opened, "nothing was opened for writing"
    path, written = opened[0]
    assert path.parent == target.parent.resolve() and path.name.startswith(".") and path.name.endswith(".tmp"), path
    assert 0 < written <= len(before) // 2  # the failure came mid-write, in a temporary file beside the target
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == names  # no temporary file left


@pytest.fixture(scope="module")
def cache_run(tiny_run, subset_path, tmp_path_factory):
    """A copy of the tiny run and its data, for the logits cache."""
    return copy_run(tiny_run, tmp_path_factory.mktemp("atomic")), load_data(subset_path)


def test_logits_cache(cache_run, disk_full_after):
    run, data = cache_run
    folder = RunFolder(run)

    def stale():  # the cache no longer matches, so it is recomputed and rewritten
        folder.cache_path("meta").write_text('{"members": {}, "tiles": -1}')

    _check_survives(lambda v: cached_val_logits(run, data, tile_ids(data)), folder.cache_path("logits"),
                    disk_full_after, between=stale)


def _fitted_fuser(seed, name="argmax"):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(4, 5, 8, 16)).astype(np.float32)
    masks = rng.integers(0, 5, (4, 8, 16))
    return get_fuser(name).fit(logits, masks, tile_ids=[f"t{seed}_{i}" for i in range(4)])


def test_fuser(tmp_path, disk_full_after):
    path = tmp_path / "fusion" / "calibrated.pt"
    _check_survives(lambda v: _fitted_fuser(v, "calibrated").save(path), path, disk_full_after)


@pytest.mark.parametrize("which", ["report.json", "report.md"])
def test_report(tmp_path, disk_full_after, which):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, (6, 8, 16))

    def write(version):
        cms = {"baseline": per_tile_confusion(truth, rng.integers(0, 5, truth.shape)),
               "learned": per_tile_confusion(truth, truth)}
        table = build_table(cms, {"baseline": 0.1, "learned": 0.05 + version}, {"soil": 0.5}, n_boot=20)
        write_report(tmp_path / "evaluation", table, {"run": f"run{version}"})

    _check_survives(write, tmp_path / "evaluation" / which, disk_full_after)


@pytest.mark.parametrize("which", ["mask", "confusion", "classes", "overlay"])
def test_png(tmp_path, disk_full_after, which):
    path = tmp_path / "png" / f"{which}.png"

    def write(version):
        rng = np.random.default_rng(version)
        if which == "mask":
            write_mask_png(rng.integers(0, 5, (64, 128)), path)
        elif which == "classes":
            write_class_png(rng.integers(0, 5, (64, 128)), path)
        elif which == "overlay":
            write_overlay_png(rng.random((64, 128)), rng.integers(0, 5, (64, 128)), path)
        else:
            confusion_png(rng.integers(0, 50, (5, 5)), path, f"model {version}")

    _check_survives(write, path, disk_full_after)


def test_cleaned_data(tmp_path, subset_path, disk_full_after):
    out = tmp_path / "clean" / "clean.npz"
    _check_survives(lambda v: api.clean_data(str(out), data=str(subset_path), min_repeats=20 + v), out, disk_full_after)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_image_summary(tmp_path, disk_full_after, suffix):
    path = tmp_path / "out" / f"summary{suffix}"
    rows = [{"id": f"img{i}", "height": 10, "width": 20, "background": 0.0, "soil": 0.5, "bedrock": 0.25,
             "sand": 0.25, "big_rock": 0.0} for i in range(20)]
    _check_survives(lambda version: write_summary(path, rows[: 10 + version]), path, disk_full_after)


def test_input_stats(tmp_path, disk_full_after):
    """The training tiles' image statistics (``RUN/input_stats.json``, written when a run is planned)."""
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.manifest_path.write_text(json.dumps({"format_version": 1, "checksums": {}}))
    tiles = np.random.default_rng(0).random((40, 16, 32)).astype(np.float32)
    _check_survives(lambda version: folder.write_input_stats(training_statistics(tiles[: 20 + version], (16, 32))),
                    folder.input_stats_path, disk_full_after)


def test_submission_csv(tmp_path, disk_full_after):
    path = tmp_path / "out" / "submission.csv"

    def write(version):
        masks = np.random.default_rng(version).integers(1, 5, (6, 8, 16))
        with SubmissionWriter(path, 8 * 16) as writer:
            for start in range(0, 6, 2):
                writer.write([str(i) for i in range(start, start + 2)], masks[start : start + 2])

    _check_survives(write, path, disk_full_after)


def test_manifest(tmp_path, disk_full_after):
    run = tmp_path / "run"
    (run / "members" / "soil").mkdir(parents=True)
    (run / "manifest.json").write_text('{"format_version": 1, "settings": {}}')
    best = [run / "members" / "soil" / name for name in ("best.pt", "latest.pt")]
    for path in best:
        path.write_bytes(path.name.encode() * 50)

    def record(version):
        RunFolder(run).record_checksums(best[: version + 1])

    _check_survives(record, run / "manifest.json", disk_full_after)


def test_config(tmp_path, disk_full_after):
    def config(version):
        record_network_config(tmp_path / "run", {"seed": 0}, f"net{version}", {"epochs": version})

    _check_survives(config, tmp_path / "run" / "config.json", disk_full_after)


#: Writes a checkpoint and an exported program once, then again under a file-size limit of half the first
#: version (RLIMIT_FSIZE: the kernel fails the write that crosses it, EFBIG, as a full disk fails with ENOSPC),
#: and prints what survived as JSON. Run in a child: torch's own writers (``torch.save`` to a path and the
#: archive writer of ``torch.export``) write below Python's ``open``, and a C++ writer that fails mid-write
#: can abort the whole process.
_REAL_FAILURE_CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from ensemble.inference.export import export_pipeline
    from fusion import get_fuser
    from members.checkpoint import save_checkpoint
    from members.stacked import StackedUNet
    from members.unet import UNet

    folder = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    fuser = get_fuser("argmax").fit(rng.normal(size=(2, 5, 8, 16)).astype(np.float32), rng.integers(0, 5, (2, 8, 16)),
                                    tile_ids=["a", "b"])

    def export(path, seed):
        torch.manual_seed(seed)
        stacked = StackedUNet.from_members([UNet(width=4, out_channels=1).eval() for _ in range(5)])
        export_pipeline(stacked, fuser, path, example_shape=(2, 1, 16, 32))

    def checkpoint(path, seed):
        model = UNet(width=4, out_channels=1)
        save_checkpoint(path, model=model.state_dict(), model_config=model.config.to_dict(), epoch=seed)

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    results = {}
    for name, write, path in (("checkpoint", checkpoint, folder / "ckpt" / "latest.pt"),
                              ("export", export, folder / "export" / "model.pt2")):
        write(path, 0)
        before = path.read_bytes()
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, resource.RLIM_INFINITY))
        try:
            write(path, 1)
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        results[name] = {"error": error, "intact": path.read_bytes() == before,
                         "names": sorted(p.name for p in path.parent.iterdir())}
    print(json.dumps(results))
""")


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is a POSIX limit")
def test_checkpoint_and_export_on_a_real_write_failure(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _REAL_FAILURE_CHILD, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]  # no abort from a C++ writer
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    checkpoint, export = results["checkpoint"], results["export"]
    assert checkpoint["error"].startswith("RunError: ") and "previous checkpoint is intact" in checkpoint["error"]
    assert "\n" not in checkpoint["error"]
    assert export["error"] == f"OSError: [Errno {errno.EFBIG}] File too large", export
    for name, expected in (("checkpoint", ["latest.pt"]), ("export", ["model.pt2"])):
        assert results[name]["intact"] and results[name]["names"] == expected, (name, results[name])
