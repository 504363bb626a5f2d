"""Class weights for cross-entropy, shared by the multiclass baseline's loss and the learned fusers."""
import torch


def class_weights(counts, ignore=()):
    """Weights ``share ** -0.5`` from per-class pixel ``counts``, normalised to mean 1 over the classes used.

    Classes in ``ignore`` (e.g. 0 under the ``competition`` objective) and classes with no pixels
    get weight 0 and take no part in the shares. Returns a float32 tensor.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64).clone()
    for c in ignore:
        counts[c] = 0
    used = counts > 0
    weights = torch.where(used, (counts / counts.sum()).rsqrt(), torch.zeros_like(counts))
    return (weights / weights[used].mean()).float()
