"""The onnxruntime engine: same probabilities and masks as PyTorch, graphs cached in the run and verified."""
import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_one_line_error, copy_run, load_script

from ensemble.cli import main
from ensemble.core.data import load_data
from ensemble.core.errors import EnsembleError, RunError
from ensemble.core.locations import PROJECT_ROOT
from ensemble.core.runfolder import RunFolder
from ensemble.inference import Predictor, cached_val_logits, engines

pytestmark = pytest.mark.skipif(not engines.onnx_available(), reason="onnxruntime, onnx or onnxscript not installed")

REFERENCE = PROJECT_ROOT / "models" / "reference"


def test_engine_choice():
    assert engines.resolve_engine("auto", "cpu") == "onnxruntime"
    assert engines.resolve_engine("auto", "cuda") == "torch"  # onnxruntime runs on the CPU only
    assert engines.resolve_engine("torch", "cpu") == "torch"
    with pytest.raises(EnsembleError, match="--engine onnxruntime runs on the CPU"):
        engines.resolve_engine("onnxruntime", "cuda")
    with pytest.raises(EnsembleError, match="--engine: unknown 'tvm'"):
        engines.resolve_engine("tvm", "cpu")


@pytest.fixture(scope="module")
def reference_copy(tmp_path_factory):
    return copy_run(REFERENCE, tmp_path_factory.mktemp("engines"))


@pytest.mark.parametrize("strategy", ["learned", "baseline"])
def test_onnxruntime_equals_torch_on_the_reference_validation_tiles(reference_copy, mars, strategy):
    """Probabilities within 1e-4 and the same masks on every eighth validation tile of the reference run
    (196 tiles, spread over every rover stop's tiles in file order: the whole set costs the suite minutes).

    Masks may differ only at exact ties: pixels whose top two probabilities are within float32 rounding.
    """
    val_idx = np.asarray(RunFolder(reference_copy).manifest()["split"]["val_indices"])[::8]
    images = mars.images[val_idx]
    results = {}
    for engine in ("torch", "onnxruntime"):
        predictor = Predictor(reference_copy, strategy, engine=engine, batch_size=64)
        assert predictor.engine == engine
        results[engine] = predictor.predict_proba(images)
    np.testing.assert_allclose(results["onnxruntime"], results["torch"], rtol=0, atol=1e-4)
    differ = results["onnxruntime"].argmax(1) != results["torch"].argmax(1)
    top2 = np.sort(results["torch"], axis=1)[:, -2:]
    assert differ.sum() <= 5 and (top2[:, 1] - top2[:, 0])[differ].max(initial=0) < 1e-6


def test_graph_is_cached_verified_and_rebuilt_when_a_member_changes(tiny_run, tmp_path, monkeypatch):
    run = copy_run(tiny_run, tmp_path)
    folder = RunFolder(run)
    images = np.random.default_rng(0).random((3, 64, 128), dtype=np.float32)
    manifest_bytes = folder.manifest_path.read_bytes()
    first = Predictor(run, None, engine="onnxruntime", stack=True).predict_member_logits(images)
    graph = folder.onnx_path("members")
    assert folder.recorded_checksum(graph) == hashlib.sha256(graph.read_bytes()).hexdigest()
    assert folder.relative(graph) in json.loads(folder.cache_checksums_path.read_text())["checksums"]
    assert folder.manifest_path.read_bytes() == manifest_bytes  # caching a graph leaves the manifest as it was
    sources = json.loads(folder.onnx_meta_path("members").read_text())["sources"]
    assert set(sources) == {f"members/{c}/best.pt" for c in ("background", "soil", "bedrock", "sand", "big_rock")}

    exports = []
    real_export = engines.export_onnx
    monkeypatch.setattr("ensemble.inference.predictor.export_onnx", lambda *a: exports.append(1) or real_export(*a))
    again = Predictor(run, None, engine="onnxruntime", stack=True).predict_member_logits(images)
    assert exports == [] and np.array_equal(first, again)  # reused, not exported again

    # a retrained member (new checkpoint, new checksum): the graph is rebuilt from it
    from members.checkpoint import load_checkpoint, save_checkpoint

    best = folder.best_path("sand")
    state = load_checkpoint(best)
    state["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    state.pop("format_version", None)
    save_checkpoint(best, **state)
    folder.record_checksums([best])
    rebuilt = Predictor(run, None, engine="onnxruntime", stack=True).predict_member_logits(images)
    assert exports == [1]
    expected = Predictor(run, None, engine="torch").predict_member_logits(images)
    np.testing.assert_allclose(rebuilt, expected, rtol=0, atol=1e-4)
    assert np.abs(rebuilt[:, 3] - first[:, 3]).max() > 1e-3 and np.array_equal(rebuilt[:, 1], first[:, 1])

    # a changed byte in the cached graph is refused, naming the file
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(RunError, match="members.onnx: sha256 differs.*cache/checksums.json"):
        Predictor(run, None, engine="onnxruntime", stack=True)

    # a cache whose checksums are gone (cache/checksums.json deleted) is rebuilt, not trusted and not refused
    graph.unlink()
    Predictor(run, None, engine="onnxruntime", stack=True)
    folder.cache_checksums_path.unlink()
    again = Predictor(run, None, engine="onnxruntime", stack=True).predict_member_logits(images)
    np.testing.assert_allclose(again, rebuilt, rtol=0, atol=1e-6)
    assert exports == [1, 1, 1] and folder.recorded_checksum(graph) is not None


def test_logits_cache_records_its_engine(tiny_run, tmp_path, subset_path):
    run = copy_run(tiny_run, tmp_path)
    data = load_data(subset_path)
    ids = np.arange(len(data.images)).astype(str)
    torch_logits = np.array(cached_val_logits(run, data, ids, engine="torch")[0])
    assert json.loads(RunFolder(run).cache_path("meta").read_text())["engine"] == "torch"
    ort_logits = np.array(cached_val_logits(run, data, ids, engine="auto")[0])
    assert json.loads(RunFolder(run).cache_path("meta").read_text())["engine"] == "onnxruntime"
    np.testing.assert_allclose(ort_logits, torch_logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("strategy", ["learned", "baseline"])
def test_export_onnx_runs_in_onnxruntime_alone(reference_copy, tmp_path, strategy):
    import onnxruntime

    out = tmp_path / f"{strategy}.onnx"
    result = CliRunner().invoke(main, ["export", "--run", str(reference_copy), "--strategy", strategy,
                                       "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(1).random((5, 64, 128), dtype=np.float32)
    expected = Predictor(reference_copy, strategy, engine="torch").predict_proba(images)
    for n in (1, 5):  # the batch dimension is dynamic
        probs = session.run(None, {"images": images[:n, None]})[0]
        assert probs.shape == (n, 5, 64, 128)
        np.testing.assert_allclose(probs, expected[:n], rtol=0, atol=1e-4)


def test_bad_engine_options_refused(tmp_path, subset_path):
    result = CliRunner().invoke(main, ["predict", "--images", str(subset_path), "--out", str(tmp_path / "s.csv"),
                                       "--engine", "onnxruntime", "--device", "cuda"])
    assert result.exit_code == 2
    result = CliRunner().invoke(main, ["export", "--format", "onnx", "--out", str(tmp_path / "m.pt2")])
    assert_one_line_error(result, "--out", "must end in .onnx")
    assert not (tmp_path / "m.pt2").exists()


def test_onnx_profile_script_sums_kernel_time_by_operator(tmp_path):
    """``scripts/onnx_profile.py`` (README, Speed) reads onnxruntime's own profile of a graph."""
    import torch

    script = load_script("onnx_profile")
    path = tmp_path / "tiny.onnx"
    engines.export_onnx(_tiny_network(), torch.rand(2, 1, 16, 24), path)
    total, per_op = script.profile(str(path), threads=1, batch_size=2, runs=3, height=16, width=24)
    assert total > 0 and ("Conv" in per_op or "FusedConv" in per_op)
    assert sum(ms for ms, _ in per_op.values()) == pytest.approx(total)
    assert all(count >= 1 for _, count in per_op.values())



def _tiny_network():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 5, 1))


def _batch_baked_in():
    """A module whose TorchScript trace keeps the example's batch size as a constant (``int()`` of a size)."""
    import torch

    class BatchBakedIn(torch.nn.Module):
        def forward(self, images):
            return images * int(images.shape[0])

    return BatchBakedIn()


def _export_failing_without_dynamo(export):
    def failing(*args, dynamo=True, **kwargs):
        if not dynamo:
            raise RuntimeError("unsupported operator")
        return export(*args, dynamo=dynamo, **kwargs)

    return failing


@pytest.mark.parametrize("case", ["torchscript", "baked-in batch", "torchscript fails"])
def test_export_onnx_keeps_a_graph_only_when_it_reproduces_the_module(case, monkeypatch):
    """The TorchScript exporter's graph is kept when onnxruntime reproduces the module on the example and on a
    batch of one; a graph that does not (a batch size traced as a constant), or an exporter that fails, leaves
    the export to the torch.export-based exporter."""
    import torch

    used = []
    real_torchscript, real_dynamo = engines._torchscript_export, engines._dynamo_export
    monkeypatch.setattr(engines, "_torchscript_export", lambda *a: used.append("torchscript") or real_torchscript(*a))
    if case == "baked-in batch":  # the module cannot be exported with a dynamic batch at all: a stand-in graph
        monkeypatch.setattr(engines, "_dynamo_export", lambda *a: used.append("dynamo") or b"stand-in")
        assert engines.export_onnx(_batch_baked_in(), torch.rand(2, 1, 16, 24)) == b"stand-in"
        assert used == ["torchscript", "dynamo"]
        return
    monkeypatch.setattr(engines, "_dynamo_export", lambda *a: used.append("dynamo") or real_dynamo(*a))
    if case == "torchscript fails":
        monkeypatch.setattr(torch.onnx, "export", _export_failing_without_dynamo(torch.onnx.export))
    network = _tiny_network()
    graph = engines.export_onnx(network, torch.rand(2, 1, 16, 24))
    assert used == (["torchscript"] if case == "torchscript" else ["torchscript", "dynamo"])
    images = torch.rand(3, 1, 16, 24)
    with torch.no_grad():
        assert torch.allclose(engines.OnnxForward(graph, threads=1)(images), network(images), atol=1e-5)
