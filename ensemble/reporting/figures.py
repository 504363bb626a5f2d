"""PNG figures: masks and overlays drawn with numpy and PIL; the plots (confusion heatmaps, the budget curve beside
its ``budget_curve.json``, the robustness benchmark) with matplotlib's headless Agg backend, through
:func:`pyplot` and :func:`save_figure`."""
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from ..core.classes import BASELINE, CLASS_NAMES, CONTROL, NUM_CLASSES, TUNED_BASELINE
from ..core.fileio import write_bytes_atomic, write_json_atomic
from .text import single_models

#: RGB colour of every class: background, soil, bedrock, sand, big rock.
CLASS_COLORS = np.array(
    [
        (40, 40, 40),  # background: dark grey
        (166, 118, 66),  # soil: brown/tan
        (96, 128, 176),  # bedrock: grey-blue
        (240, 210, 60),  # sand: yellow
        (220, 40, 40),  # big rock: red
    ],
    dtype=np.uint8,
)


_WHITE, _BLACK = (255, 255, 255), (0, 0, 0)
_PAD = 8


def _font(size=13):
    """PIL's bundled default font at ``size`` (bitmap fallback on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _text_size(draw, text, font):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _save_png(array_or_image, path, description=None):
    """Encode an (H, W[, 3]) uint8 array or a PIL image as PNG (with a ``Description`` text chunk when given) and
    write it atomically."""
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    info = None
    if description is not None:
        info = PngInfo()
        info.add_text("Description", description)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    write_bytes_atomic(path, buffer.getvalue())


def pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend (imported only when a plot is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save_figure(fig, path, dpi):
    """Render a matplotlib figure at ``dpi`` as an RGB PNG (its size: figsize x dpi), write it atomically, close it."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        _save_png(image.convert("RGB"), path)


def colorize(mask):
    """Map an integer class mask (H, W) to its uint8 RGB image (H, W, 3) in :data:`CLASS_COLORS`."""
    mask = np.asarray(mask)
    if mask.size and (mask.min() < 0 or mask.max() >= NUM_CLASSES):
        raise ValueError(f"mask labels must lie in 0..{NUM_CLASSES - 1}, got {mask.min()}..{mask.max()}")
    return CLASS_COLORS[mask.astype(np.intp)]


def _gray(values):
    """Float values in [0, 1] (clipped) to uint8 grayscale."""
    return np.round(np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * 255).astype(np.uint8)


def write_mask_png(mask, path):
    """Write an integer class mask (H, W) as a coloured RGB PNG."""
    _save_png(colorize(mask), path)


def write_gray_png(values_0_1, path, description=None):
    """Write an (H, W) array of values in [0, 1] (e.g. a probability map) as an 8-bit grayscale PNG (255 = 1).

    ``description``, when given, says what the grey levels mean, in the PNG's ``Description`` text chunk (image
    viewers and ``PIL.Image.open(path).text`` show it)."""
    _save_png(_gray(values_0_1), path, description)


def write_class_png(mask, path):
    """Write an integer class mask (H, W) as a mode-L PNG whose pixel values are the class ids 0-4."""
    mask = np.asarray(mask)
    if mask.size and (mask.min() < 0 or mask.max() >= NUM_CLASSES):
        raise ValueError(f"mask labels must lie in 0..{NUM_CLASSES - 1}, got {mask.min()}..{mask.max()}")
    _save_png(Image.fromarray(mask.astype(np.uint8), mode="L"), path)


#: Opacity of the class colours over the image in :func:`write_overlay_png`.
OVERLAY_ALPHA = 0.45


def _entry_width(draw, font, swatch, name):
    """Width of one legend entry: its swatch, a gap and its name."""
    return swatch + _PAD // 2 + _text_size(draw, name, font)[0]


def _legend_width(draw, font, swatch):
    return sum(_entry_width(draw, font, swatch, c) + 2 * _PAD for c in CLASS_NAMES)


def _legend_rows(draw, font, swatch, max_width=None):
    """The class ids of each legend row: entries in class order, as many to a row as fit in ``max_width`` pixels
    (one row when ``None``; an entry wider than ``max_width`` gets a row of its own)."""
    rows, row, used = [], [], 0
    for cls, name in enumerate(CLASS_NAMES):
        width = _entry_width(draw, font, swatch, name)
        if row and max_width is not None and used + width > max_width:
            rows.append(row)
            row, used = [], 0
        row.append(cls)
        used += width + 2 * _PAD
    return [*rows, row]


def _draw_legend(draw, x, y, swatch, font, *, rows=None, line_h=None):
    """Class swatches and names from (x, y): one row, or the ``rows`` of :func:`_legend_rows`, ``line_h`` apart."""
    for r, row in enumerate(rows or [range(len(CLASS_NAMES))]):
        left, top = x, y + r * (line_h or 0)
        for cls in row:
            name = CLASS_NAMES[cls]
            draw.rectangle([left, top, left + swatch, top + swatch], fill=tuple(int(c) for c in CLASS_COLORS[cls]),
                           outline=_BLACK)
            left += swatch + _PAD // 2
            draw.text((left, top + swatch // 2), name, fill=_BLACK, font=font, anchor="lm")
            left += _text_size(draw, name, font)[0] + 2 * _PAD


def write_overlay_png(image_0_1, mask, path, alpha=OVERLAY_ALPHA):
    """Write the grayscale image (H, W) in [0, 1] with its class colours blended in at ``alpha`` and a legend below.

    The PNG has the image's width: the legend wraps onto as many rows as that width needs, so no white margin
    is left beside the image. Only an image narrower than the widest legend entry gets a wider canvas.
    """
    gray = np.repeat(_gray(image_0_1)[..., None], 3, axis=2).astype(np.float32)
    blended = np.round((1 - alpha) * gray + alpha * colorize(mask)).astype(np.uint8)
    font = _font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_size(probe, "Ag", font)[1] + _PAD
    swatch = line_h - _PAD // 2
    height, width = blended.shape[:2]
    widest = max(_entry_width(probe, font, swatch, name) for name in CLASS_NAMES)
    canvas_width = max(width, widest + _PAD)
    rows = _legend_rows(probe, font, swatch, canvas_width - _PAD)
    canvas = np.full((height + len(rows) * line_h + _PAD // 2, canvas_width, 3), 255, dtype=np.uint8)
    canvas[:height, :width] = blended
    image = Image.fromarray(canvas)
    _draw_legend(ImageDraw.Draw(image), _PAD // 2, height + _PAD // 2, swatch, font, rows=rows, line_h=line_h)
    _save_png(image, path)


#: Size of a confusion heatmap: inches at :data:`CONFUSION_DPI` dots per inch (a 550x480-pixel PNG).
CONFUSION_FIGSIZE, CONFUSION_DPI = (5.5, 4.8), 100


def confusion_png(cm, path, title):
    """Write a heatmap PNG of the row-normalised confusion matrix ``cm`` (rows truth, columns prediction).

    Every cell shows the share of the truth row predicted as the column class (white to dark blue, 0 to 1);
    rows with no pixels show ``n/a`` in grey. Class names label both axes and ``title`` sits on top. Drawn
    with matplotlib (:func:`pyplot`, :func:`save_figure`) at :data:`CONFUSION_FIGSIZE` x :data:`CONFUSION_DPI`.
    """
    cm = np.asarray(cm, dtype=np.float64)
    classes = cm.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = cm / cm.sum(axis=1, keepdims=True)
    names = list(CLASS_NAMES[:classes])
    plt = pyplot()
    fig = plt.figure(figsize=CONFUSION_FIGSIZE)
    # fixed positions (figure fractions) for the heatmap and its colour bar: a layout engine would measure every
    # label at every draw and doubles the time of a figure that never changes shape
    ax, bar = fig.add_axes((0.25, 0.19, 0.54, 0.7)), fig.add_axes((0.82, 0.19, 0.035, 0.7))
    cmap = plt.get_cmap("Blues").with_extremes(bad=(0.86, 0.86, 0.86))  # grey: an empty truth row
    shown = ax.imshow(np.ma.masked_invalid(shares), cmap=cmap, vmin=0.0, vmax=1.0)
    for i in range(classes):
        for j in range(classes):
            value = shares[i, j]
            text = f"{value:.2f}" if np.isfinite(value) else "n/a"
            ink = "white" if np.isfinite(value) and value > 0.5 else "black"
            ax.text(j, i, text, ha="center", va="center", color=ink, fontsize=10)
    ax.set_xticks(range(classes), names, rotation=30, ha="right")
    ax.set_yticks(range(classes), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    fig.suptitle(title, fontsize=11, y=0.96)  # over the whole width: a long title fits
    fig.colorbar(shown, cax=bar, label="share of the truth row")
    save_figure(fig, path, CONFUSION_DPI)


def _upscale(array, scale):
    """Nearest-neighbour upscaling of an (H, W[, 3]) array by an integer factor."""
    return np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)


def overlay_sheet(images, truth, pred_a, pred_b, path, *, labels=("image", "truth", "baseline", "ensemble"), scale=2):
    """Write a PNG contact sheet: one row per tile with the grayscale image, truth, ``pred_a`` and ``pred_b``.

    ``images`` are floats in [0, 1] (N, H, W); the masks are integer labels (N, H, W). Columns
    carry the headers ``labels``; a colour legend with the class names sits below the rows.
    """
    images = np.asarray(images)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"need a non-empty (N, H, W) image stack, got shape {images.shape}")
    for name, masks in (("truth", truth), ("pred_a", pred_a), ("pred_b", pred_b)):
        if np.shape(masks) != images.shape:
            raise ValueError(f"{name} has shape {np.shape(masks)}, images have {images.shape}")
    if len(labels) != 4:
        raise ValueError(f"need 4 column labels, got {len(labels)}")
    n, h, w = images.shape
    th, tw = h * scale, w * scale
    font = _font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_size(probe, "Ag", font)[1] + _PAD
    swatch = line_h - _PAD // 2
    legend_w = _legend_width(probe, font, swatch)
    width = max(4 * tw + 5 * _PAD, legend_w + 2 * _PAD)
    height = line_h + n * (th + _PAD) + _PAD + line_h + _PAD
    sheet = np.full((height, width, 3), 255, dtype=np.uint8)
    for row in range(n):
        y = line_h + row * (th + _PAD)
        panels = (np.repeat(_gray(images[row])[..., None], 3, axis=2),
                  colorize(truth[row]), colorize(pred_a[row]), colorize(pred_b[row]))
        for col, panel in enumerate(panels):
            x = _PAD + col * (tw + _PAD)
            sheet[y:y + th, x:x + tw] = _upscale(panel, scale)
    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    for col, label in enumerate(labels):
        draw.text((_PAD + col * (tw + _PAD) + tw // 2, line_h - _PAD // 2), label, fill=_BLACK, font=font, anchor="mb")
    _draw_legend(draw, _PAD, height - line_h - _PAD // 2, swatch, font)
    _save_png(image, path)


def most_different_tiles(pred_a, pred_b, truth, k):
    """Indices of the ``k`` tiles (at most N) where ``pred_a`` and ``pred_b`` disagree on most pixels.

    Ties are broken by the larger gap in correctly labelled pixels between the two
    predictions, then by the lower tile index. Masks are (N, H, W).
    """
    pred_a, pred_b, truth = (np.asarray(m).reshape(len(m), -1) for m in (pred_a, pred_b, truth))
    differing = (pred_a != pred_b).sum(axis=1)
    correct_gap = np.abs((pred_a == truth).sum(axis=1) - (pred_b == truth).sum(axis=1))
    order = np.lexsort((np.arange(len(differing)), -correct_gap, -differing))
    return order[: max(int(k), 0)]


#: The budget curve's files in an evaluation folder.
CURVE_JSON = "budget_curve.json"
CURVE_PNG = "budget_curve.png"


def write_curve(out_dir, curve):
    """Write ``budget_curve.json`` and ``budget_curve.png`` (matplotlib, headless Agg) into ``out_dir``."""
    plt = pyplot()
    write_json_atomic(out_dir / CURVE_JSON, curve)
    points = curve["points"]
    models = [*single_models(points), *curve["strategies"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for model in models:
        alone = model in (BASELINE, TUNED_BASELINE, CONTROL)
        group = CONTROL if model == CONTROL else BASELINE if alone else "members"
        style = {"linestyle": "--" if model != TUNED_BASELINE else ":", "marker": "s"} if alone else {"marker": "o"}
        ys = [p["miou"].get(model, np.nan) for p in points]
        axes[0].plot([p["minutes"][group] for p in points], ys, label=model, **style)
        axes[1].plot([p["tiles_seen"] for p in points], ys, label=model, **style)
    axes[0].set_xlabel(f"training time, minutes with {curve['cores']} cores busy")
    axes[1].set_xlabel("tiles seen per network")
    axes[0].set_ylabel(f"validation mIoU ({curve['headline']})")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle("Budget curve: every model at the same points of its training")
    fig.tight_layout()
    save_figure(fig, out_dir / CURVE_PNG, 110)


ROBUSTNESS_PNG = "robustness.png"


def robustness_png(path, robustness):
    """mIoU against severity (0: clean) per corruption family, one panel per family: the served default's lines
    (held-out corruptions dashed) and the baseline's family mean in grey (matplotlib, headless Agg)."""
    plt = pyplot()
    models = list(robustness["models"])
    shown = models[-1]  # the served default is listed last
    families = robustness["families"]
    fig, axes = plt.subplots(1, len(families), figsize=(3.2 * len(families), 3.4), sharey=True, squeeze=False)
    for ax, family in zip(axes[0], families):
        for model in dict.fromkeys([shown, BASELINE]):
            if model not in robustness["models"]:
                continue
            entry = robustness["models"][model]
            rows = [r for r in entry["rows"] if r["family"] == family]
            names = list(dict.fromkeys(r["corruption"] for r in rows))
            if model == shown:
                for name in names:
                    mine = sorted((r for r in rows if r["corruption"] == name), key=lambda r: r["severity"])
                    ax.plot([0] + [r["severity"] for r in mine], [entry["clean"]] + [r["miou"] for r in mine],
                            marker="o", linestyle="-" if mine[0]["trained"] else "--",
                            label=name + ("" if mine[0]["trained"] else " (held out)"))
            else:
                severities = sorted({r["severity"] for r in rows})
                means = [np.mean([r["miou"] for r in rows if r["severity"] == s]) for s in severities]
                ax.plot([0] + severities, [entry["clean"]] + means, color="grey", linestyle=":", marker="s",
                        label=f"{model} (mean)")
        ax.set_title(family)
        ax.set_xticks([0, 1, 2, 3], ["clean", "1", "2", "3"])
        ax.set_xlabel("severity")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel(f"validation mIoU ({robustness['headline']})")
    fig.suptitle(f"Robustness of {shown}: mIoU under each corruption ({robustness['n_tiles']} validation tiles)")
    fig.tight_layout()
    save_figure(fig, path, 100)
