"""Predict masks for tiles or images of any size: a Kaggle submission CSV and per-image outputs.

Inputs: the ``test_set`` of a Kaggle-layout ``.npz`` (``--data``), or ``--images``: one image
file, a folder of them, or an ``.npz`` with ``test_set`` (else ``images``) of shape (M, H, W), or
whose arrays are all single images (H, W) of any sizes (``np.savez(path, name=image, ...)``).
Image files are PNG (8 or 16 bit, grey, RGB, palette, alpha), JPEG or TIFF, decoded with Pillow
(already used for the figures) to luma: colour converted, alpha dropped, 16 bit scaled to 8.

Ids: tiles from an ``(M, H, W)`` array are numbered by row, ``"0"`` .. ``"M-1"``, because the
Kaggle competition scores submissions by the row index of ``test_set`` (its sample submission
uses 0..M-1); a ``test_ids`` key holds source-image names and is not used as the CSV id. Images
of an ``.npz`` of single images are named by their keys; files by their stems, read in file-name
order (plain string sort: ``10.png`` before ``2.png``).

Images of the run's tile size at scale 1 are predicted in batches; any other image goes alone
through Gaussian-weighted sliding windows (:mod:`ensemble.inference.windows`). Outputs are at the input's
resolution, named by id: the Kaggle CSV (tiles of the run's size only), class-id masks, coloured
masks, overlays, uncertainty maps and a summary of class shares. Every file is written atomically.

Prediction streams: images are decoded, predicted and written one at a time (tiles one batch at a
time), so memory does not grow with their number; their sizes are read from the file headers
before any work, so an image over the pixel limit, or not of the tile size the CSV needs, is
refused before anything is predicted (a float ``.npz`` array is normalised as a whole, because its
0-255 vs 0-1 scale is decided from the whole array).
"""
import contextlib
import csv
import functools
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from fusion.base import channel_argmax

from .core.classes import CLASS_NAMES, NUM_CLASSES
from .core.data import resolve_data_path
from .core.errors import DataError, EnsembleError
from .core.fileio import check_output, write_text_atomic
from .core.progress import Progress
from .core.wording import say, warn
from .inference import InferenceOptions, Predictor
from .inference.images import array_inputs, open_inputs
from .inference.options import PredictSettings, split_options
from .inference.windows import resized_bands
from .reporting.figures import write_class_png, write_gray_png, write_mask_png, write_overlay_png
from .reporting.submission import SubmissionWriter

_BAD_ID_CHARS = set(',"\r\n')


def _check_id(tile_id, where):
    if not tile_id.isascii() or _BAD_ID_CHARS & set(tile_id):
        raise DataError(f"{where}: file name {tile_id!r} cannot be a submission id (ASCII without commas or quotes)")



def entropy_map(probs):
    """Per-pixel entropy of class probabilities (B, 5, H, W), divided by log(5): (B, H, W) in [0, 1]."""
    return torch.special.entr(probs).sum(dim=1) / math.log(NUM_CLASSES)


def disagreement_map(member_logits, labels):
    """Share of members whose one-vs-rest vote contradicts the fused label: (B, H, W) in {0, 0.2, .., 1}.

    Member k votes "class k" where its sigmoid exceeds 0.5 (logit > 0). For a pixel fused to
    class c, member c should vote yes and the other four no; every member that votes
    otherwise counts as disagreeing.
    """
    votes = member_logits > 0
    expected = torch.nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).bool()
    return (votes != expected).float().mean(dim=1)


#: What the grey levels of the uncertainty PNGs mean: each PNG's ``Description`` text chunk, and
#: :data:`UNCERTAINTY_KEY_FILE` in the ``--uncertainty`` folder.
ENTROPY_KEY = ("<id>_entropy.png: entropy of the class probabilities the mask was taken from, divided by log(5). "
               "Grey level g means g/255: 0 (black) = all probability on one class, 255 (white) = the five "
               "classes equally likely.")
DISAGREEMENT_KEY = ("<id>_disagreement.png: share of the five one-vs-rest members whose vote (sigmoid > 0.5) "
                    "contradicts the fused label. Grey level g means g/255 of the five: 0 (black) = all five "
                    "agree, 51 = one member disagrees, 102 = two, 153 = three, 204 = four, 255 (white) = all five. "
                    "Written only for strategies that run the members.")
UNCERTAINTY_KEY_FILE = "KEY.txt"


def uncertainty_key():
    """The text of :data:`UNCERTAINTY_KEY_FILE`: what every grey level of the uncertainty PNGs means."""
    return ("What the grey levels of the uncertainty maps mean (8-bit grayscale PNGs, 255 = 1).\n\n"
            f"{ENTROPY_KEY}\n\n{DISAGREEMENT_KEY}\n")


#: The per-image outputs: option name, what it holds (for messages).
IMAGE_OUTPUTS = (("masks", "class-id masks"), ("png", "coloured masks"), ("overlay", "overlays"),
                 ("uncertainty", "uncertainty maps"))
SUMMARY_SUFFIXES = (".csv", ".json")


def _check_outputs(folders, summary, out):
    """Refuse, before any work, an output that cannot be written: a folder that is a file or lies under one, a
    summary of another format, a file path that is a folder (:func:`~ensemble.core.fileio.check_output`)."""
    for option, what in IMAGE_OUTPUTS:
        if folders.get(option) is not None:
            check_output(f"--{option}", folders[option], f"a folder for the {what}", folder=True)
    if summary is not None:
        if summary.suffix.lower() not in SUMMARY_SUFFIXES:
            raise DataError(f"--summary {summary}: expected a file name ending in .csv or .json")
        check_output("--summary", summary, "a .csv or .json file")
    if out is not None:
        check_output("--out", out, "the submission CSV's file name")


def _check_sizes(inputs, tile_shape, max_pixels, csv_wanted):
    """Refuse, before any work, an image over ``max_pixels``, and for a CSV any image not of the run's tile size."""
    for i, (height, width) in enumerate(inputs.shapes):
        if height * width > max_pixels:
            raise DataError(f"{inputs.where(i)}: {height}x{width} = {height * width} pixels, over the limit of "
                            f"{max_pixels} per image (--max-pixels); expected a smaller image")
        if csv_wanted and (height, width) != tuple(tile_shape):
            raise EnsembleError(f"--out: a Kaggle CSV holds {tile_shape[0]}x{tile_shape[1]} tiles (the run's size), "
                                f"but {inputs.where(i)} is {height}x{width}; for images of other sizes write "
                                "--masks, --png or --overlay without --out")
        if csv_wanted:
            _check_id(inputs.ids[i], inputs.where(i))


def class_shares(mask):
    """The share of every class among the pixels of ``mask`` (H, W): ``{class name: share}``."""
    counts = np.bincount(np.asarray(mask).ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    return {name: float(c) / max(int(counts.sum()), 1) for name, c in zip(CLASS_NAMES, counts)}


def write_summary(path, rows):
    """Write the per-image class shares as CSV (id, height, width, one column per class, warnings) or JSON,
    atomically. ``warnings`` holds the input check's findings (:mod:`ensemble.core.imagestats`), empty when none."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        write_text_atomic(path, json.dumps(rows, indent=2) + "\n")
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", "height", "width", *CLASS_NAMES, "warnings"],
                            lineterminator="\n", restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(path, buffer.getvalue())


def output_maps(class_logits, member_logits, size, uncertainty=False):
    """``(masks, entropy, disagreement)`` (B, H, W) at ``size`` from logits (B, 5, h, w) at any size.

    Masks are uint8 class ids (the argmax); with ``uncertainty`` the entropy map and, when there are member
    logits, the disagreement map (float32; else ``None``). Logits are resized band by band
    (:func:`~ensemble.inference.windows.resized_bands`), so a large image's logits are never held at its size.
    """
    n, (height, width) = len(class_logits), size
    masks = np.empty((n, height, width), dtype=np.uint8)
    entropy = np.empty((n, height, width), dtype=np.float32) if uncertainty else None
    disagreement = None
    if uncertainty and member_logits is not None:
        disagreement = np.empty((n, height, width), dtype=np.float32)
        member_bands = resized_bands(member_logits, size)
    for top, bottom, band in resized_bands(class_logits, size):
        labels = channel_argmax(band)
        masks[:, top:bottom] = labels.to(torch.uint8).numpy()
        if entropy is not None:
            entropy[:, top:bottom] = entropy_map(torch.softmax(band, dim=1)).numpy()
        if disagreement is not None:
            disagreement[:, top:bottom] = disagreement_map(next(member_bands)[2], labels).numpy()
        del band, labels
    return masks, entropy, disagreement


class _Outputs:
    """Where one prediction goes: CSV rows, per-image files and summary rows."""

    def __init__(self, writer, folders, summary):
        self.writer, self.folders, self.summary, self.rows = writer, folders, summary, []

    def write(self, ids, images, class_logits, member_logits, size=None, *, notes=None):
        """Write a batch (B, ...) of masks of ``ids``: CSV rows and the per-image outputs asked for.

        Logits at another size than ``size`` (the images' (H, W), default the logits' own) are brought to it
        band by band (:func:`output_maps`). ``notes`` are the images' input-check findings for the summary.
        """
        folders = self.folders
        size = tuple(class_logits.shape[-2:]) if size is None else tuple(size)
        masks, entropy, disagreement = output_maps(class_logits, member_logits, size,
                                                   folders.get("uncertainty") is not None)
        if self.writer is not None:
            self.writer.write(ids, masks)
        for i, image_id in enumerate(ids):
            if folders.get("masks") is not None:
                write_class_png(masks[i], folders["masks"] / f"{image_id}.png")
            if folders.get("png") is not None:
                write_mask_png(masks[i], folders["png"] / f"{image_id}.png")
            if folders.get("overlay") is not None:
                write_overlay_png(images[i], masks[i], folders["overlay"] / f"{image_id}.png")
            if entropy is not None:
                write_gray_png(entropy[i], folders["uncertainty"] / f"{image_id}_entropy.png", ENTROPY_KEY)
                if disagreement is not None:
                    write_gray_png(disagreement[i], folders["uncertainty"] / f"{image_id}_disagreement.png",
                                   DISAGREEMENT_KEY)
            if self.summary is not None:
                self.rows.append({"id": image_id, "height": int(masks[i].shape[0]), "width": int(masks[i].shape[1]),
                                  **class_shares(masks[i]), "warnings": notes[i] if notes else ""})


def _tile_runs(inputs, predictor):
    """``(start, stop)`` of the consecutive images that go through the networks as batches of tiles, or alone."""
    i, n = 0, len(inputs)
    while i < n:
        if not predictor.fits_tiles(inputs.shapes[i]):
            yield i, i + 1, False
            i += 1
            continue
        stop = i
        while stop < n and stop - i < predictor.batch_size and predictor.fits_tiles(inputs.shapes[stop]):
            stop += 1
        yield i, stop, True
        i = stop


def _predictions(inputs, predictor, members=True):
    """Yield ``(ids, images (B, H, W), class_logits, member_logits)`` batch by batch, or image by image.

    Without ``members`` an image's member logits are not brought to its size (``None``).
    """
    for start, stop, batched in _tile_runs(inputs, predictor):
        ids = inputs.ids[start:stop]
        if batched:
            images = inputs.batch(start, stop)
            for _, class_logits, member_logits in predictor.logit_batches(images):
                yield ids, images, class_logits, member_logits
        else:
            image = inputs.image(start)
            class_logits, member_logits = predictor.image_logits(image, members, resize=False)
            yield ids, image[None], class_logits, member_logits


def _input_notes(predictor, inputs, first, images, warn):
    """The input check's finding of each image of a batch (``""`` when in range), each said on one line to ``warn``.

    ``first`` is the batch's first image in ``inputs`` (what the line names)."""
    notes = []
    for check in predictor.check(images):
        notes.append(check.message())
        if notes[-1] and warn is not None:
            warn(f"warning: {inputs.where(first + check.index)}: {notes[-1]}")
    return notes


def predict_run(run, strategy="learned", *, data=None, images=None, settings=None, options=None, quiet=False,
                **keywords):
    """Predict masks with ``strategy`` of ``run``: a Kaggle submission CSV ``out`` and/or per-image outputs.

    ``strategy``: any fuser fitted in ``RUN/fusion`` or ``"baseline"``; another name raises
    :class:`EnsembleError` listing the run's strategies. Images: ``images`` (a path, see
    :func:`open_inputs`, or an array (N, H, W) uint8 / float whose ids are the row numbers) if
    given, else the ``test_set`` of ``data`` (the Kaggle ``.npz``, default
    :func:`~ensemble.core.data.resolve_data_path`).

    ``options`` (:class:`~ensemble.inference.options.InferenceOptions`) say how the networks run, ``settings``
    (:class:`~ensemble.inference.options.PredictSettings`) what is written and which images are taken; the fields of
    either may also be given as keywords (``tta``, ``batch_size``, ``scale``, ``out``, ``masks_dir``, ...).
    Images of the run's tile size at ``scale`` 1 go through the networks in batches of
    ``batch_size``: member logits -> fused logits (or the baseline's logits) -> labels (argmax,
    identical to ``Fuser.predict``). Any other image goes alone through sliding windows
    (:meth:`~ensemble.inference.Predictor.image_logits`, ``scale`` and ``step``); its outputs are at
    its own size. Outputs, each file named by the image's id: ``out`` the CSV (header
    ``id,0,..,H*W-1``, row-major labels; only for tiles of the run's size, refused otherwise);
    ``masks_dir`` class-id PNGs (mode L, values 0-4); ``png_dir`` coloured masks; ``overlay_dir``
    the image with its class colours and a legend; ``uncertainty_dir`` ``<id>_entropy.png``
    (entropy of the class probabilities / log 5, see :func:`entropy_map`) and, for ensemble
    strategies, ``<id>_disagreement.png`` (see :func:`disagreement_map`), both grayscale with
    255 = 1, each saying so in its ``Description`` text chunk, and ``KEY.txt`` (:func:`uncertainty_key`);
    ``summary`` (``.csv`` or ``.json``) every image's class shares. Without ``out``, a CSV
    is written to ``submission.csv`` only when no per-image output is asked for. Images over
    ``max_pixels`` are refused before any work. Memory stays flat in the number of images; the
    CSV and the summary appear only when complete.

    The settings' ``notes`` are said once the inputs are checked, before any image is predicted; progress
    (images done, tiles per second and the ETA: a tqdm bar on a terminal, a line every 2 s elsewhere) and the
    final count are said through the ``ensemble`` logger unless ``quiet``.

    Input check (``check_inputs``): every image, at the training scale, is compared with the range of image
    statistics of the run's training tiles (:meth:`~ensemble.inference.Predictor.check`); a warning is logged
    (also when ``quiet``) for each image out of range, naming the image, the statistic, its value against
    the range and the likely cause, and the summary's ``warnings`` column holds the same (empty when none).
    The masks are never changed by it. A run without ``input_stats.json`` is not checked, and that is said once.

    Returns ``{"rows": n CSV rows, "images": n, "out": CSV path or None, "strategy", "seconds"}``.
    """
    started = time.perf_counter()
    given = split_options(keywords, options=InferenceOptions, settings=PredictSettings)
    options = InferenceOptions.of(options, **given["options"])
    settings = (settings or PredictSettings()).replace(**given["settings"])
    progress = None if quiet else say
    log = progress or (lambda line: None)
    out, summary, check_inputs = settings.out, settings.summary, settings.check_inputs
    folders = {"masks": settings.masks_dir, "png": settings.png_dir, "overlay": settings.overlay_dir,
               "uncertainty": settings.uncertainty_dir}
    folders = {k: Path(v) if v is not None else None for k, v in folders.items()}
    summary = Path(summary) if summary is not None else None
    if out is None and not any(folders.values()) and summary is None:
        out = "submission.csv"
    _check_outputs(folders, summary, out)
    predictor = Predictor(run, strategy, options=options, log=log, check_inputs=check_inputs)
    if isinstance(images, np.ndarray):
        inputs = array_inputs(images, "images", "an array")
    else:
        source = Path(images) if images is not None else resolve_data_path(data)
        inputs = open_inputs(source, folders=images is not None)
    _check_sizes(inputs, predictor.tile_shape, settings.max_pixels, out is not None)  # before any file is opened
    for line in () if quiet else settings.notes:  # known to be worth saying now that the inputs are good
        say(line)
    checking = check_inputs and predictor.input_range is not None
    if check_inputs and not checking and progress is not None:
        progress(predictor.unchecked_note())
    sizes = sorted({f"{h}x{w}" for h, w in inputs.shapes})
    log(f"predicting {len(inputs)} images ({', '.join(sizes[:3])}{', ...' if len(sizes) > 3 else ''}) from "
        f"{inputs.source} with {strategy}, tta {predictor.tta}, scale {predictor.scale:g}, engine {predictor.engine}")
    meter = Progress(len(inputs), progress, unit="images", desc="predict")
    rate = lambda: f"{predictor.windows_run / meter.elapsed:.1f} tiles/s"  # noqa: E731
    line = lambda done: (f"{done}/{len(inputs)} images, {rate()}, ETA "
                         f"{meter.elapsed / max(done, 1) * (len(inputs) - done):.0f} s ({meter.elapsed:.1f} s)")
    writer = SubmissionWriter(out, math.prod(predictor.tile_shape)) if out is not None else None
    done = 0
    with torch.inference_mode(), (writer if writer is not None else contextlib.nullcontext()):
        outputs = _Outputs(writer, folders, summary)
        members = folders["uncertainty"] is not None  # only the disagreement map reads the member logits
        for ids, batch_images, class_logits, member_logits in _predictions(inputs, predictor, members):
            notes = _input_notes(predictor, inputs, done, batch_images, warn) if checking else None
            outputs.write(ids, batch_images, class_logits, member_logits, batch_images.shape[1:], notes=notes)
            done += len(ids)
            meter.update(done, functools.partial(line, done), **{"tiles/s": predictor.windows_run / meter.elapsed})
            del class_logits, member_logits  # drop this batch before the next one is computed
    if summary is not None:
        write_summary(summary, outputs.rows)
    if folders["uncertainty"] is not None:
        write_text_atomic(folders["uncertainty"] / UNCERTAINTY_KEY_FILE, uncertainty_key())
    meter.close()
    if progress is not None:
        progress(f"{done}/{len(inputs)} images, {rate()}, done ({meter.elapsed:.1f} s)")
    seconds = time.perf_counter() - started
    return {"rows": writer.rows if writer is not None else 0, "images": done,
            "out": str(out) if out is not None else None, "strategy": strategy, "seconds": round(seconds, 3)}

