"""From a trained run folder to logits, probabilities and masks.

- :mod:`.options`: :class:`InferenceOptions`, how the networks run (device, engine, TTA, batch size, layout,
  windows), one object for every verb;
- :mod:`.loading`: checkpoints verified against the run, the members, multiclass nets and control as modules;
- :mod:`.predictor`: :class:`Predictor`, built once from a run and a strategy, serving every prediction;
- :mod:`.batching`: tiles into batches (lazily normalised), flip TTA, batches back into arrays;
- :mod:`.windows`: images of any size by Gaussian-weighted sliding windows;
- :mod:`.engines`: PyTorch or onnxruntime, and the run's cached ONNX graphs;
- :mod:`.export`: one program of networks, fuser and softmax (``ensemble export``);
- :mod:`.strategies`: what a run can serve and the defaults its evaluation recorded;
- :mod:`.cache`: the validation logits fusers are fitted and scored on, cached in the run.
"""
from .batching import all_logits, as_image, as_tiles, logits_batches
from .cache import cached_val_logits, fuser_inputs, source_logits
from .loading import (
                      MEMBERS,
                      available_sources,
                      check_run_data,
                      load_control,
                      load_members,
                      load_multiclass,
                      load_network_state,
                      load_run_fuser,
                      source_networks,
)
from .options import BATCH_SIZE, TTA_CHOICES, InferenceOptions, check_tta, resolve_stack
from .predictor import Predictor
from .strategies import FALLBACK_STRATEGY, check_strategy, default_strategy, default_tta, fitted_strategies

__all__ = [
    "BATCH_SIZE", "FALLBACK_STRATEGY", "MEMBERS", "TTA_CHOICES", "InferenceOptions", "Predictor", "all_logits",
    "as_image", "as_tiles", "available_sources", "cached_val_logits", "check_run_data", "check_strategy",
    "check_tta", "default_strategy", "default_tta", "fitted_strategies", "fuser_inputs", "load_control",
    "load_members", "load_multiclass", "load_network_state", "load_run_fuser", "logits_batches", "resolve_stack",
    "source_logits", "source_networks",
]
