"""Execution engines for inference: PyTorch, or the same networks exported to ONNX and run by onnxruntime.

``--engine auto`` (the default) picks onnxruntime on the CPU when it is installed (a dependency:
it runs the networks faster than eager PyTorch on the CPU, docs/performance.md), else PyTorch; ``--engine torch``
and ``--engine onnxruntime`` force one. onnxruntime runs on the CPU only: with ``--device cuda`` ``auto`` means
PyTorch.

A run keeps the ONNX graphs it runs in ``RUN/cache/onnx/`` (:mod:`ensemble.core.runfolder` names
the files): one per network set (the stacked or one-by-one members, the baseline), exported with
``torch.onnx.export`` (dynamic batch) the first time they are needed: by the TorchScript exporter (about a
second a graph against 5-15 s for the torch.export-based one: docs/performance.md, ONNX export), or by the
torch.export-based exporter where the TorchScript one fails or its graph does not reproduce the module. A graph is
verified against a recorded sha256 like every checkpoint (recorded in the cache's own
``cache/checksums.json``, so caching a graph never rewrites the run's ``manifest.json``), and a
sidecar JSON records the sha256 of the checkpoints it was made from: when one of them changes, the
graph is rebuilt. Where the run folder cannot be written, the graph is kept in memory for the command.
"""
import contextlib
import importlib.util
import io
import json
import logging
import os
import warnings

import numpy as np
import torch

from ..core.errors import EnsembleError
from ..core.fileio import atomic_path, write_json_atomic

ENGINES = ("auto", "torch", "onnxruntime")
#: ONNX opset of the exported graphs.
OPSET = 18


def onnx_available():
    """True when onnxruntime (to run) and onnx + onnxscript (to export) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx", "onnxscript"))


def resolve_engine(engine, device="cpu"):
    """``auto`` -> ``onnxruntime`` on the CPU when installed, else ``torch``; refuse what cannot run."""
    if engine not in ENGINES:
        raise EnsembleError(f"--engine: unknown {engine!r}; valid: {', '.join(ENGINES)}")
    if engine == "auto":
        return "onnxruntime" if device == "cpu" and onnx_available() else "torch"
    if engine == "onnxruntime":
        if device != "cpu":
            raise EnsembleError(f"--engine onnxruntime runs on the CPU; use --device cpu or --engine torch "
                                f"(got {device})")
        if not onnx_available():
            raise EnsembleError("--engine onnxruntime: onnxruntime, onnx and onnxscript are not installed "
                                "(pip install onnxruntime onnx onnxscript), or use --engine torch")
    return engine


@contextlib.contextmanager
def _quiet_export():
    """Silence the exporter's progress lines and warnings (they are not the user's business)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(module, example, path=None):
    """Export ``module`` (eval mode, CPU) to ONNX with a dynamic batch dimension.

    ``example`` is an input (N, C, H, W); height and width are fixed to its. The graph has
    one input ``images`` and one output ``outputs``. Exported by the TorchScript exporter when its graph
    reproduces the module on ``example`` (:func:`_reproduces`), else by the torch.export-based one. Written to
    ``path`` atomically (temp file, then ``os.replace``) when given; returns the serialized graph as bytes.
    """
    module = module.eval()
    with _quiet_export(), torch.inference_mode(False), torch.no_grad():
        data = _torchscript_export(module, example)
        if data is None or not _reproduces(data, module, example):
            data = _dynamo_export(module, example)
    if path is not None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return data


def _torchscript_export(module, example):
    """The graph (bytes) by ``torch.onnx.export(dynamo=False)``, or None where that exporter fails or is gone."""
    buffer = io.BytesIO()
    try:
        torch.onnx.export(module, (example,), buffer, input_names=["images"], output_names=["outputs"],
                          dynamic_axes={"images": {0: "batch"}, "outputs": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    except Exception:  # any failure of the older exporter leaves the export to the newer one
        return None
    return buffer.getvalue()


def _dynamo_export(module, example):
    """The graph (bytes) by the torch.export-based ``torch.onnx.export``."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(module, (example,), input_names=["images"], output_names=["outputs"],
                                dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, verbose=False)
    return program.model_proto.SerializeToString()


def _reproduces(graph, module, example):
    """True when onnxruntime runs ``graph`` to ``module``'s outputs on ``example`` and on its first image alone
    (a batch size traced as a constant shows there): the same infinite entries (class 0 of a competition run) and
    the finite ones within 1e-4 (float32 rounding)."""
    inputs = (example, example[:1])
    try:
        forward = OnnxForward(graph, threads=1)
        outputs = [forward(x) for x in inputs]
    except Exception:  # a graph onnxruntime cannot load or run
        return False
    for got, want in zip(outputs, (module(x) for x in inputs)):
        if got.shape != want.shape or not torch.equal(torch.isfinite(got), torch.isfinite(want)):
            return False
        finite = torch.isfinite(want)
        if not torch.equal(got[~finite], want[~finite]) or not torch.allclose(got[finite], want[finite],
                                                                            rtol=1e-4, atol=1e-4):
            return False
    return True


class OnnxForward:
    """A callable images (N, C, H, W) float32 tensor -> outputs tensor, run by an onnxruntime session.

    The session's threads do not spin-wait after a run: between runs PyTorch works on the same cores
    (fusers, window stitching, another source's session), and spinning threads starve it
    (docs/performance.md, Whole frames).
    """

    def __init__(self, graph, threads=None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, x):
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"images": array})[0])


def cached_graph(folder, name, sources, build, log=None):
    """The ONNX graph ``RUN/cache/onnx/<name>.onnx`` (bytes), built by ``build(path)`` unless current.

    ``sources`` maps a source file to its sha256 (the checkpoints the graph is made from). The
    graph is reused while the sidecar's sources and opset agree and its checksum is recorded (and matches);
    otherwise it is rebuilt and its checksum recorded. If the run folder cannot be written, ``build(None)``
    makes the graph in memory only.
    """
    path, meta_path = folder.onnx_path(name), folder.onnx_meta_path(name)
    meta = {"sources": sources, "opset": OPSET}
    if path.exists() and meta_path.exists():
        try:
            current = json.loads(meta_path.read_text()) == meta
        except (OSError, ValueError):
            current = False
        if current and folder.recorded_checksum(path) is not None:
            return folder.verify(path).read_bytes()
    if log:
        log(f"exporting the {name} networks to ONNX for onnxruntime (once; cached in {path.parent})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        graph = build(path)
        write_json_atomic(meta_path, meta)
        folder.record_checksums([path])
    except PermissionError:
        graph = build(None)
    return graph
