"""A trained run's model card (``RUN/MODEL_CARD.md``), generated from the run's own files.

The card says what the networks are and how they were trained, what they are for and not for, the data
they learned from and its terms, the metric, the validation scores with their intervals, the scores on
corrupted images, the input conventions, the known failure modes and how to reproduce the run. It reads
``evaluation/report.json`` (what ``ensemble evaluate`` wrote), ``config.json``, ``manifest.json`` and each
network's ``metrics.json``; every number on the card comes from them, and a value they lack reads
"not recorded". The card holds no date or path of the machine it was made on, so regenerating it from
unchanged files gives the same bytes (tests/test_model_card.py checks the shipped card that way).

Without ``--write`` it prints the card; ``--write`` replaces ``RUN/MODEL_CARD.md`` atomically (a temporary
file beside it, then ``os.replace``), the only file it writes. A folder that is not an evaluated run ends
with one ``Error: ...`` line and exit status 2.

Usage: python scripts/model_card.py [--run models/reference] [--write]
"""
import argparse
import json
import sys
from pathlib import Path

from ensemble.core.augment import RECIPE, AugmentConfig
from ensemble.core.classes import (
    BASELINE,
    CLASS_NAMES,
    STUDENT,
    TERRAIN_NAMES,
    TUNED_BASELINE,
    is_baseline_replica,
    is_control,
)
from ensemble.core.fileio import write_text_atomic
from ensemble.core.runfolder import CONFIG, INPUT_STATS, MANIFEST, METRICS, MODEL_CARD, RunFolder
from members.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN = ROOT / "models" / "reference"
REPORT = "report.json"
NOT_RECORDED = "not recorded"
#: Where the card's prose comes from, for its readers (paths relative to the checkout).
DATA_README = "../shared/data/README.md"


class CardError(Exception):
    """The run folder cannot give a card: the message is the one line the command prints."""


# ---------------------------------------------------------------- reading the run


def _read_json(path, what):
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CardError(f"{path}: not found; --run must be a trained run evaluated by `ensemble evaluate` "
                        f"({what})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CardError(f"{path}: cannot read {what}: {exc}".splitlines()[0]) from None
    if not isinstance(value, dict):
        raise CardError(f"{path}: {what} is not a JSON object")
    return value


def _optional_json(path):
    """A JSON object from ``path``, or ``{}`` when the file is missing or unreadable (its values: not recorded)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_run(run):
    """The files of the run folder ``run`` the card is made from: ``{"report", "config", "manifest", "metrics",
    "input_stats"}`` (``metrics``: per network of ``config.json``, ``{}`` where its file is missing)."""
    path = Path(run)
    if not path.is_dir():
        raise CardError(f"--run {run}: not a folder")
    folder = RunFolder(path)
    report = _read_json(folder.evaluation_dir / REPORT, "the evaluation report")
    if not isinstance(report.get("table"), dict) or not isinstance(report["table"].get("models"), dict):
        raise CardError(f"{folder.evaluation_dir / REPORT}: no table of models; is it a report of `ensemble evaluate`?")
    config = _read_json(folder.path / CONFIG, "the run's training configs")
    manifest = _read_json(folder.path / MANIFEST, "the run's manifest")
    networks = config.get("networks") if isinstance(config.get("networks"), dict) else {}
    metrics = {name: _optional_json(folder.network_dir(name) / METRICS) for name in networks}
    return {"report": report, "config": config, "manifest": manifest, "metrics": metrics,
            "input_stats": (folder.path / INPUT_STATS).is_file()}


def _get(mapping, *keys):
    """``mapping[k0][k1]...``, or ``None`` where a level is missing."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


# ---------------------------------------------------------------- formatting


def _num(value, fmt=".3f"):
    return NOT_RECORDED if not isinstance(value, (int, float)) or isinstance(value, bool) else format(value, fmt)


def _count(value):
    return NOT_RECORDED if not isinstance(value, int) or isinstance(value, bool) else f"{value:,}"


def _interval(entry):
    """``+0.037 [+0.023, +0.050]`` from a ``{"diff", "low", "high"}`` entry of the report."""
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), (int, float)) for k in ("diff", "low", "high")):
        return NOT_RECORDED
    return f"{entry['diff']:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}]"


def _value(value):
    """A recorded setting as the card shows it: JSON's spelling, ``not recorded`` for ``None`` (missing)."""
    if value is None:
        return NOT_RECORDED
    return f"`{value}`" if isinstance(value, str) else f"`{json.dumps(value)}`"


def _shared(configs, *keys):
    """One setting across networks: its value when they agree, else each network's, else not recorded."""
    values = {name: _get(cfg, *keys) for name, cfg in configs.items()}
    distinct = {json.dumps(v, sort_keys=True) for v in values.values()}
    if not values or distinct == {"null"}:
        return NOT_RECORDED
    if len(distinct) == 1:
        return _value(next(iter(values.values())))
    return ", ".join(f"{name} {_value(v)}" for name, v in values.items())


def _share(fraction):
    return f"{100 * fraction:.0f} %" if isinstance(fraction, (int, float)) else NOT_RECORDED


# ---------------------------------------------------------------- what the networks are


def role(name, cfg):
    """What a network of the run is, in words."""
    target = cfg.get("target")
    if name == BASELINE:
        return "multiclass baseline U-Net"
    if is_baseline_replica(name):
        return "the baseline's replica (another seed)"
    if is_control(name):
        return "ensembling-control multiclass net (members' width)"
    if name == STUDENT:
        return "distilled multiclass student"
    if isinstance(target, int) and 0 <= target < len(CLASS_NAMES):
        return f"one-vs-rest member: {CLASS_NAMES[target]} vs the rest"
    return NOT_RECORDED


def served_networks(strategy, networks):
    """The networks the strategy ``strategy`` runs (its fuser's ``sources``; ``members``: every one-vs-rest
    member of the run), or ``None`` when it is not a known model."""
    import fusion

    members = [n for n, cfg in networks.items() if isinstance(cfg.get("target"), int)]
    if strategy in fusion.FUSERS:
        sources = fusion.FUSERS[strategy].sources
    elif strategy == "control":
        sources = [n for n in networks if is_control(n)]
    elif strategy in networks:
        sources = [strategy]
    else:
        return None
    return [n for s in sources for n in (members if s == "members" else [s])]


def matching_preset(configs):
    """The preset of ``members/presets.py`` whose every field each network's config has, when exactly one does:
    the run's files record the settings, not the preset's name."""
    if not configs:
        return None
    matches = [name for name, fields in PRESETS.items()
               if all(all(cfg.get(k) == v for k, v in fields.items()) for cfg in configs.values())]
    return matches[0] if len(matches) == 1 else None


def augmentation(configs):
    """Lines on the recorded augmentation: every setting, and how a setting the record lacks is read."""
    recorded = {name: cfg.get("augment") for name, cfg in configs.items()}
    if not recorded or any(not isinstance(a, dict) for a in recorded.values()):
        return [f"* Augmentation: {NOT_RECORDED}."], None
    fields = list(AugmentConfig.__dataclass_fields__)
    lines = ["* Augmentation (`augment` in `config.json`; rotation and zoom resample the tiles, `degrade` is the "
             "share of tiles given random noise, blur, exposure, resampling and JPEG):"]
    for key in fields:
        if all(key in a for a in recorded.values()):
            lines.append(f"  * `{key}`: {_shared(recorded, key)}")
        else:
            default = getattr(AugmentConfig(), key)
            lines.append(f"  * `{key}`: {NOT_RECORDED}; the trainer reads a missing key as `{json.dumps(default)}` "
                         f"(`ensemble/core/augment.py: AugmentConfig`)")
    effective = {name: AugmentConfig(**{k: v for k, v in a.items() if k in fields}) for name, a in recorded.items()}
    return lines, effective


# ---------------------------------------------------------------- the card


def model_card(run=DEFAULT_RUN):
    """The markdown model card (one string) of the run folder ``run``."""
    files = read_run(run)
    report, config, manifest, metrics = files["report"], files["config"], files["manifest"], files["metrics"]
    table, meta = report["table"], report.get("meta") or {}
    models = table["models"]
    headline = table.get("headline") or "competition"
    best = table.get("best_strategy")
    baseline = table.get("baseline") or BASELINE
    tuned = table.get("tuned_baseline") or TUNED_BASELINE
    networks = config.get("networks") if isinstance(config.get("networks"), dict) else {}
    run_path = _shown_path(run)
    alpha = _get(table, "bootstrap", "alpha")
    level = f"{100 * (1 - alpha):.0f} %" if isinstance(alpha, (int, float)) else "(level not recorded)"

    def miou(model):
        return _get(models, model, "miou", headline)

    out = [f"# Model card: `{run_path}`", "",
           f"Generated by `python scripts/model_card.py --run {run_path} --write` from the run's "
           f"`evaluation/{REPORT}`, `{CONFIG}`, `{MANIFEST}` and each network's `{METRICS}`; every number below "
           f"comes from those files. Rerun the command after the run changes instead of editing this file.", ""]

    # ---- model details
    out += ["## Model details", "",
            "A per-class ensemble for semantic segmentation of grayscale Mars terrain into "
            f"{len(manifest.get('classes') or CLASS_NAMES)} classes "
            f"({', '.join(f'{i} {c}' for i, c in enumerate(manifest.get('classes') or CLASS_NAMES))}): "
            "compact one-vs-rest U-Nets, one per terrain class plus a background detector, whose logit maps a "
            "fusion stage turns into one mask, trained beside a multiclass U-Net of matched parameter count "
            f"(the baseline) and fusers that read both. Package `mars-ensemble` "
            f"{_get(manifest, 'versions', 'mars-ensemble') or NOT_RECORDED}, run format "
            f"{manifest.get('format_version', NOT_RECORDED)}.", ""]
    served = served_networks(best, networks) if best else None
    if best:
        params = [_get(metrics, n, "parameters") for n in served or []]
        total = sum(params) if served and all(isinstance(p, int) for p in params) else None
        tta = _get(table, "tta_gain", "defaults", best)
        out += [f"**Served by default: `{best}`** (`table.best_strategy` of the report: the servable model with the "
                f"highest cross-fitted {headline} mIoU; `ensemble predict`, `export` and `api.predictor()` serve it "
                f"when no `--strategy` is given), {headline} mIoU **{_num(miou(best))}** on the validation tiles. "
                f"It runs {len(served) if served else NOT_RECORDED} networks "
                f"({', '.join(f'`{n}`' for n in served) if served else NOT_RECORDED}), "
                f"{_count(total)} parameters, plus its fuser's few weights; test-time augmentation served with it: "
                f"{tta if tta else NOT_RECORDED}.", ""]
    else:
        out += [f"**Served by default:** {NOT_RECORDED} (the report names no best strategy; `predict` then serves "
                "`learned` when fitted, else the baseline).", ""]
    out += ["| network | what it is | output channels | width | depth | bottleneck | loss | parameters | "
            "best epoch / epochs run | best validation IoU |",
            "|---|---|---:|---:|---:|---|---|---:|---|---:|"]
    for name, cfg in networks.items():
        m = metrics.get(name, {})
        model = cfg.get("model") or {}
        epochs = f"{m.get('best_epoch', NOT_RECORDED)} / {m.get('epochs_run', NOT_RECORDED)}" if m else NOT_RECORDED
        out.append(f"| `{name}` | {role(name, cfg)} | {model.get('out_channels', NOT_RECORDED)} | "
                   f"{model.get('width', NOT_RECORDED)} | {model.get('depth', NOT_RECORDED)} | "
                   f"{model.get('bottleneck', NOT_RECORDED)} | {cfg.get('loss', NOT_RECORDED)} | "
                   f"{_count(m.get('parameters'))} | {epochs} | {_num(m.get('best_val_iou'))} |")
    if not networks:
        out.append(f"| {NOT_RECORDED} | | | | | | | | | |")
    members = [n for n, cfg in networks.items() if isinstance(cfg.get("target"), int)]
    member_params = [_get(metrics, n, "parameters") for n in members]
    member_total = (_count(sum(member_params)) if members and all(isinstance(p, int) for p in member_params)
                    else NOT_RECORDED)
    out += ["", f"The {len(members)} members hold {member_total}"
            f" parameters together, the baseline {_count(_get(metrics, baseline, 'parameters'))}. "
            "Best validation IoU: a member's own class against the rest, a multiclass net's mIoU, as training "
            "measured them each epoch.", ""]

    preset = matching_preset(networks)
    aug_lines, effective = augmentation(networks)
    settings = manifest.get("settings") or config.get("settings") or {}
    sampler = {n: cfg.get("sampler_weight") for n, cfg in networks.items()
               if cfg.get("sampler_weight") not in (None, 1, 1.0)}
    preset_line = (f"`{preset}` (the name is {NOT_RECORDED}; every network has its fields, `members/presets.py`)"
                   if preset else NOT_RECORDED)
    out += ["### Training recipe", "",
            f"* Preset: {preset_line}.",
            f"* Epochs: {_shared(networks, 'epochs')}; batch size {_shared(networks, 'batch_size')}; "
            f"tiles per epoch {_shared(networks, 'samples_per_epoch')} (0: every training tile).",
            f"* Learning rate {_shared(networks, 'lr')}, weight decay {_shared(networks, 'weight_decay')}, "
            f"schedule {_shared(networks, 'schedule')} with warm-up {_shared(networks, 'warmup_epochs')} epochs to "
            f"{_shared(networks, 'min_lr_ratio')} of the rate; early-stopping patience "
            f"{_shared(networks, 'patience')} (0: none; `best.pt` is the best validation epoch).",
            f"* Objective: {_value(settings.get('objective'))}; seed {_value(settings.get('seed'))}; "
            f"tiles holding a member's class oversampled (`sampler_weight`): "
            f"{', '.join(f'`{n}` x{w}' for n, w in sampler.items()) if sampler else 'none'}.",
            *aug_lines]
    if effective and any(e.to_dict() != RECIPE.to_dict() for e in effective.values()):
        differ = sorted({k for e in effective.values() for k, v in e.to_dict().items() if v != getattr(RECIPE, k)})
        overrides = ",".join(f"augment.{k}={json.dumps(getattr(next(iter(effective.values())), k))}" for k in differ)
        out.append(f"  * This differs from today's training recipe (`ensemble/core/augment.py: RECIPE`) in "
                   f"{', '.join(f'`{k}`' for k in differ)}: retraining the recorded recipe needs `--set {overrides}`.")
    data = manifest.get("data") or {}
    split = manifest.get("split") or {}
    out += [f"* Data: `{data.get('file', NOT_RECORDED)}`, sha256 `{data.get('sha256', NOT_RECORDED)}`, "
            f"{_count(data.get('tiles'))} tiles of {_shape(data.get('tile_shape'))} pixels.",
            f"* Split ({split.get('method', NOT_RECORDED)}: by rover stop, validation share "
            f"{_value(settings.get('val_fraction'))}): {_count(_len(split.get('train_indices')))} training tiles, "
            f"{_count(_len(split.get('val_indices')))} validation tiles from {_count(_len(split.get('val_groups')))} "
            f"rover stops that no network trained on; outlier tiles dropped: "
            f"{_count(_len(split.get('outliers_dropped')))}.",
            "* Software: " + (", ".join(f"{k} {v}" for k, v in sorted((manifest.get('versions') or {}).items()))
                                or NOT_RECORDED) + f"; run created {manifest.get('created', NOT_RECORDED)}.", ""]

    # ---- intended use
    shape = _shape(data.get("tile_shape"))
    out += ["## Intended use", "",
            f"* Segmenting grayscale Mars Science Laboratory (Curiosity) NavCam terrain images into soil, bedrock, "
            f"sand and big rock, at the training scale: {shape} tiles as the data file holds them, or whole frames "
            "of any size brought to that scale with `--scale` and covered by sliding windows.",
            "* Research, teaching and benchmarking of segmentation ensembles on the AN2DL 2024-25 Homework 2 task; "
            "a Kaggle submission of its test set (`ensemble predict --out submission.csv`).", "",
            "## Out-of-scope use", "",
            "* Other cameras (Hazcam, Mastcam, other rovers' or landers' cameras), colour images (they are read as "
            "luma), other planets or bodies, and aerial or orbital images: the networks saw none of these.",
            "* Images at another scale than the training tiles without the matching `--scale`, and lossy or "
            "processed images (JPEG, resized, denoised, stretched): see the failure modes below.",
            "* Safety-critical decisions, such as rover navigation or hazard avoidance, without validation on the "
            "target images and a human in the loop: the masks are confident also where they are wrong.", ""]

    # ---- data
    out += ["## Training data", "",
            f"`{data.get('file', NOT_RECORDED)}` (described in `{DATA_README}`): real NASA/JPL-Caltech "
            "Curiosity (MSL) NavCam images with human terrain labels from the public AI4Mars dataset, cut and "
            "scaled to the grayscale tile format of the Kaggle AN2DL 2024-2025 Homework 2 competition "
            "(`mars_for_students.npz` layout: `training_set` image and mask pairs, `test_set` images, plus "
            "`training_groups`, the rover stop of each tile, and the source image ids). Each 256x256 copy of an "
            "AI4Mars image was split into its top and bottom half and each half downsampled 2x (image: 2x2 mean; "
            "mask: 2x2 majority); tiles with under 5 % labeled pixels were dropped. AI4Mars' classes map to the "
            "Kaggle scheme (soil, bedrock, sand, big rock; its unlabeled pixels become class 0). The test images "
            "come from rover stops none of the training pool holds.", "",
            "**Licence and terms.** The images are NASA/JPL-Caltech's and the labels are the AI4Mars dataset's, "
            "published by NASA JPL. The project's files name no licence for them: see the AI4Mars dataset's terms "
            "(and the Kaggle competition's rules for its layout). The trained weights and reports of this run are "
            "derived from that data and follow its terms; the project's code is MIT-licensed (`LICENSE`).", ""]

    # ---- metric
    out += ["## Metric", "",
            f"Headline: **{headline} mIoU**. `competition` is the competition's metric, "
            "`keras.metrics.MeanIoU(num_classes=5, ignore_class=0)`: pixels whose true label is 0 (unlabeled) are "
            "dropped, one confusion matrix is accumulated over all remaining pixels of all tiles, and the IoU is "
            "averaged over the class ids whose union is non-zero; under the `competition` objective no class-0 "
            "pixel is predicted, so that is the mean over soil, bedrock, sand and big rock. `labeled` is the same "
            "mean over classes 1-4, `allpixels` scores every pixel (a class predicted on an unlabeled pixel counts "
            "as wrong).", "",
            f"Scored on {_count(meta.get('n_tiles'))} validation tiles ({meta.get('split', NOT_RECORDED)} split). "
            f"Fusers: {meta.get('fusers_fitted_on', NOT_RECORDED)}. Intervals: "
            f"{_get(table, 'bootstrap', 'method') or NOT_RECORDED}, {_count(_get(table, 'bootstrap', 'n_boot'))} "
            f"replicates, {level}; the report stores them for differences between two models on the same tiles "
            "(every model minus the baseline, and minus the bias-tuned baseline), not for one model's score alone. "
            f"Engine: {meta.get('engine', NOT_RECORDED)}; test-time augmentation in the scores: "
            f"{meta.get('tta', NOT_RECORDED)}.", ""]

    # ---- results
    out += ["## Validation results", "",
            f"| model | {headline} mIoU | minus `{baseline}` [{level}] | minus `{tuned}` [{level}] | pixel accuracy |",
            "|---|---:|---:|---:|---:|"]
    for name in sorted(models, key=lambda n: -(miou(n) if isinstance(miou(n), (int, float)) else -1)):
        label = f"`{name}`" + (" (served)" if name == best else "")
        vs_base = "-" if name == baseline else _interval(_get(table, "differences", name, f"miou_{headline}"))
        vs_tuned = "-" if name == tuned else _interval(_get(table, "tuned_differences", name, f"miou_{headline}"))
        out.append(f"| {label} | {_num(miou(name))} | {vs_base} | {vs_tuned} | "
                   f"{_num(_get(models, name, 'pixel_accuracy'))} |")
    out.append("")
    if best:
        recorded = list(_get(models, best, "iou") or _get(models, baseline, "iou") or TERRAIN_NAMES)
        classes = [c for c in TERRAIN_NAMES if c in recorded] + [c for c in recorded if c not in TERRAIN_NAMES]
        out += [f"Per-class IoU of the served `{best}` and the baseline `{baseline}`, with the served model's "
                f"difference from each baseline and its {level} interval:", "",
                f"| class | `{baseline}` | `{tuned}` | `{best}` | `{best}` - `{baseline}` | `{best}` - `{tuned}` |",
                "|---|---:|---:|---:|---:|---:|"]
        for cls in classes:
            vs_base = "-" if best == baseline else _interval(_get(table, "differences", best, cls))
            vs_tuned = "-" if best == tuned else _interval(_get(table, "tuned_differences", best, cls))
            out.append(f"| {cls} | {_num(_get(models, baseline, 'iou', cls))} | "
                       f"{_num(_get(models, tuned, 'iou', cls))} | "
                       f"{_num(_get(models, best, 'iou', cls))} | {vs_base} | {vs_tuned} |")
        out.append("")
    out += [f"`{best or 'the served model'}` was chosen as the best of {len(models)} models on these same "
            "validation tiles, so its score is slightly optimistic for new images from the same rover stops' "
            "distribution; the cross-fitted fusers never scored a tile they were fitted on.", ""]

    # ---- robustness
    robust = table.get("robustness")
    out += ["## Clean vs corrupted images", ""]
    if isinstance(robust, dict) and isinstance(robust.get("models"), dict) and robust["models"]:
        out += [f"`ensemble evaluate --robustness`: the validation tiles under {len(robust.get('corruptions') or [])} "
                f"corruptions at severities {', '.join(map(str, robust.get('severities') or [])) or NOT_RECORDED} "
                f"(noise, JPEG, blur, exposure, resampling; `docs/reference.md`, Robustness benchmark). mPC: the mean "
                f"{headline} mIoU over every corruption and severity; rPC: mPC / clean.", "",
                "| model | clean | mPC | rPC | mPC trained | mPC held out | worst (corruption, severity: mIoU) |",
                "|---|---:|---:|---:|---:|---:|---|"]
        for name, row in robust["models"].items():
            worst = _get(row, "all", "worst") or {}
            worst_text = (f"{worst.get('corruption')} {worst.get('severity')}: {_num(worst.get('miou'))}"
                          if worst else NOT_RECORDED)
            out.append(f"| `{name}`{' (served)' if name == best else ''} | {_num(row.get('clean'))} | "
                       f"{_num(_get(row, 'all', 'mpc'))} | {_num(_get(row, 'all', 'rpc'))} | "
                       f"{_num(_get(row, 'trained', 'mpc'))} | {_num(_get(row, 'held_out', 'mpc'))} | {worst_text} |")
        out.append("")
    else:
        out += ["Not measured: the report has no robustness section (`ensemble evaluate --robustness` was not part "
                "of the evaluation that wrote it). Only clean, lossless tiles were scored; expect lower scores on "
                "corrupted images (`docs/reference.md`, Robustness benchmark, says how to measure them).", ""]

    # ---- conventions
    out += ["## Inputs and scale", "",
            f"* Tiles: {shape} pixels, one grey channel (`in_channels` {_shared(networks, 'model', 'in_channels')}), "
            "uint8 0-255 or float 0-1; colour images are converted to luma.",
            "* `--scale F` is the input's pixels per training pixel: the tiles are 2x2 means of AI4Mars' 256x256 "
            "copies of NavCam frames, so 2 for those copies and 8 for full 1024x1024 frames. The image is brought "
            "to the training scale by area averaging, covered by Gaussian-weighted sliding windows of the tile "
            "size (`--step`) and the mask returned at the image's own resolution (`docs/reference.md`, Images of "
            "any size).",
            f"* Objective {_value(settings.get('objective'))}: " + (
                "the masks never hold class 0; every pixel gets a terrain class, also sky, rover hardware or "
                "unlabeled ground." if settings.get("objective") == "competition" else
                "the masks hold all five classes, class 0 for what the labels leave unlabeled."
                if settings.get("objective") else f"{NOT_RECORDED}."), ""]

    # ---- failure modes
    served_iou = _get(models, best, "iou") or {}
    weakest = min((c for c in served_iou if isinstance(served_iou[c], (int, float))),
                  key=lambda c: served_iou[c], default=None)
    out += ["## Known failure modes", ""]
    if weakest:
        out.append(f"* **Rare classes.** {weakest} is the weakest class of `{best}`: IoU "
                   f"{_num(served_iou[weakest])} (baseline {_num(_get(models, baseline, 'iou', weakest))}). Big rock "
                   "is a small share of the labeled pixels, and its tiles are oversampled in training "
                   f"({', '.join(f'`{n}` x{w}' for n, w in sampler.items()) if sampler else 'not in this run'}).")
    else:
        out.append(f"* **Rare classes.** Per-class IoU of the served model: {NOT_RECORDED}. Big rock is a small "
                   "share of the labeled pixels.")
    degraded = effective and any(e.degrade for e in effective.values())
    out.append("* **Corrupted images.** " + (
        "The networks trained with random degradations of the image" if degraded else
        "The networks trained without degradations of the image (the recorded augmentation has none)") +
        "; noise, JPEG, blur and resampling change the fine texture they read. " +
        ("See the scores above." if isinstance(robust, dict) and robust.get("models") else
         "Their cost was not measured for this report."))
    out.append("* **Wrong `--scale`.** An image given at another scale than its true one is segmented as texture "
               "of the wrong size; a tile given with `--scale 2` is half a tile at the training scale.")
    if files["input_stats"]:
        out.append(f"* **Input warnings.** `predict` checks every image at the training scale against the "
                   f"statistics of the run's training tiles (`{INPUT_STATS}`: noise, sharpness, detail, JPEG "
                   "traces, grey levels, size) and prints `warning: <image>: ...` on stderr for one out of range, "
                   "also with `--quiet`; the mask is unchanged. Treat a warned image's mask as unreliable.")
    else:
        out.append(f"* **Input warnings.** This run has no `{INPUT_STATS}`, so `predict` does not check its inputs "
                   "and says so once on stderr.")
    out.append("")

    # ---- reproduce
    out += ["## How to reproduce", "",
            f"* The run: `bash scripts/reference_run.sh` (`RUN=` picks the folder) trains every network, fits every "
            f"fuser and evaluates; the report here was written on `{meta.get('run', NOT_RECORDED)}` with seed "
            f"{_value(settings.get('seed'))}. A run resumes from its `latest.pt` when cut.",
            f"* This card: `python scripts/model_card.py --run {run_path} --write`.",
            "* The project's code is under the MIT licence (`LICENSE`); the weights follow the data's terms "
            "(above).", ""]
    return "\n".join(out)


def _len(value):
    return len(value) if isinstance(value, list) else None


def _shape(value):
    return "x".join(map(str, value)) if isinstance(value, list) and value else NOT_RECORDED


def _shown_path(run):
    """``run`` as the card names it: relative to the checkout when inside it, so the card does not depend on
    where the checkout lives."""
    path = Path(run).resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return Path(run).as_posix()


def write_card(run, text):
    """Replace ``RUN/MODEL_CARD.md`` with ``text`` atomically; return its path."""
    path = Path(run) / MODEL_CARD
    write_text_atomic(path, text)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(DEFAULT_RUN), help="the evaluated run folder [default: models/reference]")
    parser.add_argument("--write", action="store_true", help=f"Write RUN/{MODEL_CARD} instead of printing the card.")
    args = parser.parse_args(argv)
    try:
        text = model_card(args.run)
    except CardError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    if not args.write:
        sys.stdout.write(text)
        return 0
    try:
        path = write_card(args.run, text)
    except OSError as exc:
        print(f"Error: cannot write {Path(args.run) / MODEL_CARD}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
