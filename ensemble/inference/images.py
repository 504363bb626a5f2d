"""The images ``predict`` reads: an ``.npz`` of tiles or single images, an image file, or a folder of them.

Image files are PNG (8 or 16 bit, grey, RGB, palette, alpha), JPEG or TIFF, decoded with Pillow to luma: colour
converted, alpha dropped, 16 bit scaled to 8. Sizes are read from the file headers before anything is decoded, so
a caller can refuse an image before any work; :class:`Inputs` then decodes one image at a time.
"""
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.data import open_npz
from ..core.errors import DataError
from .batching import as_image, as_tiles

_NPZ_KEYS = ("test_set", "images")
#: Image file suffixes ``--images`` reads, and the Pillow formats they must decode as.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "TIFF": "TIFF"}
_EXPECTED = "a PNG, JPEG or TIFF image"


def _format_of(path):
    """The image format a file's suffix promises: PNG, JPEG or TIFF."""
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "TIFF")


def _decode_failure(path, exc):
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(str(path), "file")
    return DataError(f"{path}: not a decodable {_format_of(path)} ({reason}); expected {_EXPECTED}")


def _open_checked(path):
    """``Image.open(path)`` after checking the format matches the suffix (the header only: nothing decoded)."""
    image = Image.open(path)
    expected = _format_of(path)
    found = _FORMATS.get(image.format)
    if found != expected:
        image.close()
        raise DataError(f"{path}: not a {expected} file (it is {image.format}); expected {_EXPECTED} named by its "
                        "format")
    if 0 in image.size:
        image.close()
        raise DataError(f"{path}: image has no pixels ({image.size[0]}x{image.size[1]}); expected {_EXPECTED}")
    return image


def image_shape(path):
    """(H, W) of an image file from its header; :class:`DataError` naming the file when it is not an image.

    A PNG is also verified (its chunks' checksums, read without decoding the pixels), so a truncated
    or corrupted PNG is refused before any work.
    """
    try:
        with _open_checked(path) as image:
            if image.format == "PNG":
                image.verify()
            return image.size[1], image.size[0]
    except (OSError, SyntaxError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
        raise _decode_failure(path, exc) from None


def decode_gray(path):
    """One image file as grayscale uint8 (H, W): colour converted to luma, alpha dropped, 16 bit scaled to 8."""
    try:
        with _open_checked(path) as image:
            image.load()
            if image.mode.startswith("I"):  # 16-bit (or 32-bit integer) grayscale: 0-65535 to 0-255
                return np.round(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
            if image.mode == "F":  # float TIFF: 0-1 or 0-255
                values = np.asarray(image, dtype=np.float64)
                values = values * 255 if np.nanmax(values) <= 1 else values
                return np.round(np.nan_to_num(values)).clip(0, 255).astype(np.uint8)
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise _decode_failure(path, exc) from None


class Inputs:
    """The images to predict, decoded one at a time: ids, sizes (known before any decoding) and images.

    ``image(i)`` is a float32 0-1 (H, W) array; ``where(i)`` names the image in messages.
    """

    def __init__(self, ids, shapes, image, where, source, batch=None):
        self.ids, self.shapes, self._image, self._where, self.source = ids, shapes, image, where, source
        self._batch = batch

    def __len__(self):
        return len(self.ids)

    def image(self, i):
        """Image ``i`` as float32 0-1 (H, W)."""
        return self._image(i)

    def where(self, i):
        """What to call image ``i`` in a message: its file, or its array and row."""
        return self._where(i)

    def batch(self, start, stop):
        """Images ``start``..``stop`` (all of one size) as float32 (B, H, W)."""
        if self._batch is not None:
            return self._batch(start, stop)
        return np.stack([self.image(i) for i in range(start, stop)])


def _as_unit_float(gray):
    """A uint8 image as float32 in 0-1, scaled in place (one float copy of a large image, not two)."""
    image = gray.astype(np.float32)
    image /= 255.0
    return image


def _file_inputs(paths, source):
    shapes = [image_shape(path) for path in paths]
    return Inputs([p.stem for p in paths], shapes, lambda i: _as_unit_float(decode_gray(paths[i])),
                  lambda i: str(paths[i]), source)


def _folder_inputs(folder):
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    if not entries:
        raise DataError(f"{folder}: folder holds no images (expected PNG, JPEG or TIFF files)")
    for path in entries:
        if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{folder}: {path.name} is not an image file ({', '.join(IMAGE_SUFFIXES)}); the folder "
                            "must hold only images")
    return _file_inputs(entries, folder)


def array_inputs(raw, where, source):
    """An (M, H, W) array of tiles as :class:`Inputs`, ids the row numbers."""
    tiles = as_tiles(raw, where)
    return Inputs([str(i) for i in range(len(tiles))], [tiles.shape[1:]] * len(tiles), lambda i: tiles[i],
                  lambda i: f"{where}[{i}]", source, batch=lambda start, stop: tiles[start:stop])


def _npz_inputs(path):
    # the tiles alone (a Kaggle file's training set is not read), else every single image of the archive
    arrays = open_npz(path, keys=_NPZ_KEYS, or_all=True)
    key = next((k for k in _NPZ_KEYS if k in arrays), None)
    if key is not None:
        raw, where = arrays.pop(key), f"{path.name}['{key}']"
        if raw.ndim != 3 or 0 in raw.shape:
            raise DataError(f"{where}: shape {raw.shape}, expected (M, H, W) grayscale tiles")
        return array_inputs(raw, where, path)
    if not arrays or any(np.ndim(a) != 2 for a in arrays.values()):
        found = ", ".join(f"{k} {np.shape(a)}" for k, a in sorted(arrays.items())) or "none"
        raise DataError(f"{path.name}: no 'test_set' or 'images' key to predict, and not an .npz of single (H, W) "
                        f"images (keys found: {found})")
    keys = sorted(arrays)
    images = {k: as_image(arrays[k], f"{path.name}['{k}']") for k in keys}
    return Inputs(keys, [images[k].shape for k in keys], lambda i: images[keys[i]],
                  lambda i: f"{path.name}['{keys[i]}']", path)


def open_inputs(path, folders=True):
    """The images of ``path``: an ``.npz``, or (with ``folders``: ``--images``) an image file or a folder of them.

    Without ``folders`` (``--data``) a missing path or a folder gets the data file's own message.
    """
    path = Path(path)
    if folders and not path.exists():
        raise DataError(f"{path}: not found (--images expects an image file, a folder of images or an .npz)")
    if folders and path.is_dir():
        return _folder_inputs(path)
    if folders and path.suffix.lower() in IMAGE_SUFFIXES:
        return _file_inputs([path], path)
    return _npz_inputs(path)


def load_images(path):
    """Read images to predict; return ``(images float32 0-1, ids list[str])``.

    ``images`` is one (N, H, W) array when all have one size, else a list of (H, W) arrays. ``path``
    is an ``.npz`` (key ``test_set``, else ``images``; ids are the row indices ``"0"`` .. ``"N-1"`` as
    Kaggle expects; or single images named by their keys), an image file or a folder of images
    (sorted by file name, decoded as grayscale, ids are the file stems). Raises :class:`DataError` for
    a missing path, an empty folder, a file that is not an image or not decodable (named), or an
    ``.npz`` without images.
    """
    inputs = open_inputs(path)
    if len(set(map(tuple, inputs.shapes))) == 1:
        return inputs.batch(0, len(inputs)), inputs.ids
    return [inputs.image(i) for i in range(len(inputs))], inputs.ids
