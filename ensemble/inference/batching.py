"""Images into batches and back: tiles normalised lazily, batches through a forward (with or without the flip),
batches concatenated into one array."""
import numpy as np
import torch

from ..core.augment import mirror_averaged_logits
from ..core.data import normalize_images
from ..core.errors import DataError
from .options import BATCH_SIZE, TTA_CHOICES


def logits_batches(forward, images, batch_size=BATCH_SIZE, device="cpu", tta="none"):
    """Yield ``(start, logits)`` of ``forward`` for float images (N, H, W) in 0-1, batch by batch.

    Logits come back as float32 CPU tensors. ``tta="flip"`` averages the logits of the
    image and of its horizontal mirror.
    """
    for start in range(0, len(images), batch_size):
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))[:, None].to(device)
            logits = tta_logits(forward, x, tta)
        yield start, logits


def tta_logits(forward, x, tta):
    """Logits of ``forward`` on the batch ``x`` as float32 CPU tensors: as they are, or averaged with the mirror's."""
    if tta == "none":
        return forward(x).float().contiguous().cpu()
    if tta == "flip":
        return mirror_averaged_logits(forward, x).float().contiguous().cpu()
    raise ValueError(f"unknown tta {tta!r}; valid: {', '.join(TTA_CHOICES)}")


def all_logits(batches, n):
    """Concatenate the batches of a ``*_logits_batches`` generator into one (N, C, H, W) array."""
    out = None
    for start, logits in batches:
        if out is None:
            out = np.empty((n, *logits.shape[1:]), dtype=np.float32)
        out[start : start + len(logits)] = logits.numpy()
    return out


class Tiles:
    """Raw tiles (N, H, W) that ``len()`` and slicing turn into float32 0-1 batches on the fly.

    uint8 tiles stay uint8 and are divided by 255 per batch; any other dtype is validated and
    normalised as a whole by :func:`~ensemble.core.data.normalize_images`.
    """

    def __init__(self, raw, where):
        self.where = where
        self.raw = raw if raw.dtype == np.uint8 else normalize_images(raw, where)

    def __len__(self):
        return len(self.raw)

    @property
    def shape(self):
        """(N, H, W)."""
        return self.raw.shape

    def __getitem__(self, index):
        chunk = self.raw[index]
        return normalize_images(chunk, self.where) if chunk.dtype == np.uint8 else chunk


def as_image(raw, where="image"):
    """One image (H, W), uint8 0-255 or float 0-1 / 0-255, as float32 0-1; :class:`DataError` for anything else."""
    raw = np.asarray(raw)
    if raw.ndim != 2 or 0 in raw.shape:
        raise DataError(f"{where}: shape {raw.shape}, expected a grayscale image (H, W) with pixels")
    return normalize_images(raw[None], where)[0]


def image_list(images):
    """``(single, images)``: one (H, W) image, a list of them, or an (N, H, W) array as float 0-1 images."""
    if isinstance(images, Tiles):
        return False, (images[i] for i in range(len(images)))
    if isinstance(images, np.ndarray) or torch.is_tensor(images):
        array = np.asarray(images)
        if array.ndim == 2:
            return True, [as_image(array)]
        tiles = as_tiles(array)
        return False, (tiles[i] for i in range(len(tiles)))
    if isinstance(images, (list, tuple)):
        return False, (as_image(image, f"images[{i}]") for i, image in enumerate(images))
    raise DataError(f"images: got {type(images).__name__}, expected an array (H, W) or (N, H, W) or a list of arrays")


def as_tiles(images, where="images"):
    """Wrap an array of tiles (N, H, W), uint8 0-255 or float 0-1 / 0-255, as a lazily normalised :class:`Tiles`."""
    raw = np.asarray(images)
    if raw.ndim != 3 or 0 in raw.shape:
        raise DataError(f"{where}: shape {raw.shape}, expected (N, H, W) grayscale tiles")
    return Tiles(raw, where)
