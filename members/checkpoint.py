"""Checkpoints: weights, optimiser and scheduler state, epoch and the model config, saved atomically.

Loaded with ``torch.load(weights_only=True)``; the model is rebuilt from its config alone.
"""
import pickle
import zipfile
from pathlib import Path

import torch

from ensemble import FORMAT_VERSION
from ensemble.core.errors import RunError
from ensemble.core.fileio import atomic_path, pickle_refusal

from .unet import UNet, UNetConfig


def standard_layout(value):
    """``value`` with every tensor in it (through dicts, lists and tuples) in the contiguous (NCHW) layout.

    Training runs channels-last; checkpoints keep the standard layout, so a file does not
    depend on the memory format it was trained in.
    """
    if torch.is_tensor(value):
        return value.contiguous()
    if isinstance(value, dict):  # same mapping type, and a state dict keeps its ``_metadata``
        out = type(value)((k, standard_layout(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            out._metadata = value._metadata
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(standard_layout(v) for v in value)
    return value


def save_checkpoint(path, **state):
    """Save ``state`` (plain types and tensors, stored contiguous) to ``path`` via a temp file and ``os.replace``.

    If writing fails (disk full, no permission) the previous file at ``path`` is left
    intact and :class:`RunError` says so.
    """
    path = Path(path)
    state = {"format_version": FORMAT_VERSION, **standard_layout(state)}
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
        kept = "the previous checkpoint is intact" if path.exists() else "nothing was written"
        raise RunError(f"{path}: could not write checkpoint ({reason}); {kept}") from None


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint dict safely; a missing or corrupted file raises :class:`RunError` naming it."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path}: checkpoint not found") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as exc:
        refused = pickle_refusal(exc)
        if refused:
            raise RunError(f"{path}: holds a pickled Python object ({refused}), which is never loaded; "
                           "checkpoints hold only tensors and plain values") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path}: corrupted or unreadable checkpoint ({first[:160]})") from None
    if not isinstance(state, dict) or "model_config" not in state or "model" not in state:
        raise RunError(f"{path}: not a checkpoint of this tool (no model or model_config)")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise RunError(
            f"{path}: written by a newer format version {state['format_version']} "
            f"(this tool reads up to {FORMAT_VERSION}); upgrade the package"
        )
    return state


def model_from_checkpoint(state, device="cpu"):
    """Rebuild the :class:`UNet` from a checkpoint's config and load its weights (eval mode)."""
    model = UNet(UNetConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()
