"""What a newcomer meets first, checked on small inputs: output paths refused in one line before any work,
messages in plain words, overlays that fit their image, keyed uncertainty maps, matplotlib confusion
heatmaps and an install-only command in the README.

Prediction uses the shipped reference run on two synthetic 256x256 frames at --scale 2.
"""
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_one_line_error
from PIL import Image

from ensemble.cli import main
from ensemble.core.classes import CLASS_NAMES
from ensemble.core.locations import shipped_run
from ensemble.reporting import figures
from ensemble.reporting.figures import CLASS_COLORS

ROOT = Path(__file__).resolve().parents[1]
FRAME = 256


def _frames(folder, n=2):
    """``n`` synthetic 256x256 grey frames (smooth shading and noise) as PNGs in ``folder``."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    ramp = np.linspace(60, 180, FRAME)[None, :] + np.linspace(0, 40, FRAME)[:, None]
    for i in range(n):
        frame = np.clip(ramp + rng.normal(0, 12, (FRAME, FRAME)), 0, 255).astype(np.uint8)
        Image.fromarray(frame).save(folder / f"frame{i}.png")
    return folder


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- output paths are checked before any work ------------------------------------------------------------

#: An output of ``predict`` under an existing file: (option, value, what the message expects).
_UNDER_A_FILE = [("--overlay", "notes.txt/out", "a folder for the overlays"),
                 ("--masks", "notes.txt/out", "a folder for the class-id masks"),
                 ("--png", "notes.txt/out", "a folder for the coloured masks"),
                 ("--uncertainty", "notes.txt/out", "a folder for the uncertainty maps"),
                 ("--summary", "notes.txt/shares.csv", "a .csv or .json file"),
                 ("--out", "notes.txt/s.csv", "the submission CSV's file name")]


@pytest.mark.parametrize("option, value, expected", _UNDER_A_FILE, ids=[o for o, _, _ in _UNDER_A_FILE])
def test_predict_output_under_a_file_is_one_line_before_any_work(tmp_path, monkeypatch, option, value, expected):
    _frames(tmp_path / "frames")
    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    before = _listing(tmp_path)
    others = [] if option == "--masks" else ["--masks", "masks"]  # a good output beside it is not written either
    result = CliRunner().invoke(main, ["predict", "--run", "reference", "--images", "frames", "--scale", "2",
                                       *others, option, value])
    assert_one_line_error(result, f"{option} {value}: notes.txt is a file", f"expected {expected}")
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("args, fragment", [
    (["export", "--run", "reference", "--out", "notes.txt/m.pt2"], "--out notes.txt/m.pt2: notes.txt is a file"),
    (["export", "--run", "reference", "--out", "adir"], "--out adir: is a folder; expected a file name ending in"),
    (["evaluate", "--run", "reference", "--out", "notes.txt/ev"], "--out notes.txt/ev: notes.txt is a file"),
    (["evaluate", "--run", "reference", "--out", "notes.txt"], "--out notes.txt: is a file; expected a folder"),
    (["data", "clean", "--out", "notes.txt/c.npz"], "--out notes.txt/c.npz: notes.txt is a file"),
    (["data", "clean", "--out", "adir"], "--out adir: is a folder"),
    (["train", "--run", "notes.txt/run"],
     "--run notes.txt/run: notes.txt is a file, so nothing can be created under it; expected a run folder"),
    (["run", "--run", "notes.txt"], "--run notes.txt: is a file; expected a run folder"),
    (["predict", "--run", "notes.txt/run", "--masks", "m"], "--run notes.txt/run: notes.txt is a file"),
], ids=["export-under-file", "export-folder", "evaluate-under-file", "evaluate-file", "clean-under-file",
        "clean-folder", "train", "run", "predict-run"])
def test_other_verbs_refuse_an_unusable_output_in_one_line(tmp_path, monkeypatch, args, fragment):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    before = _listing(tmp_path)
    assert_one_line_error(CliRunner().invoke(main, args), fragment)
    assert _listing(tmp_path) == before


def test_unusable_output_reasons(tmp_path):
    from ensemble.core.fileio import unusable_output

    (tmp_path / "f").write_text("x")
    assert unusable_output(tmp_path / "new" / "deeper" / "x.csv") is None
    assert unusable_output(tmp_path / "f") is None  # an existing file is replaced
    assert unusable_output(tmp_path / "f", folder=True) == "is a file"
    assert unusable_output(tmp_path, folder=False) == "is a folder"
    assert unusable_output(tmp_path / "f" / "a" / "b", folder=True) == f"{tmp_path / 'f'} is a file, so nothing " \
                                                                       "can be created under it"


# --- score says images or tiles ------------------------------------------------------------------------------

def test_score_counts_whole_images_as_images_and_tiles_as_tiles(tmp_path):
    rng = np.random.default_rng(1)
    for folder in ("pred", "truth"):
        (tmp_path / folder).mkdir()
    for i in range(3):
        mask = rng.integers(0, 5, (FRAME, FRAME)).astype(np.uint8)
        for folder in ("pred", "truth"):
            Image.fromarray(mask, mode="L").save(tmp_path / folder / f"f{i}.png")
    frames = CliRunner().invoke(main, ["score", str(tmp_path / "pred"), "--masks", str(tmp_path / "truth")])
    assert frames.exit_code == 0, frames.output
    assert "3 images;" in frames.output and "tiles" not in frames.output
    tiles = rng.integers(0, 5, (4, 64, 128))
    np.save(tmp_path / "tiles.npy", tiles)
    result = CliRunner().invoke(main, ["score", str(tmp_path / "tiles.npy"), "--masks", str(tmp_path / "tiles.npy")])
    assert result.exit_code == 0 and "4 tiles;" in result.output, result.output


# --- a mistyped strategy ------------------------------------------------------------------------------------

def test_a_mistyped_strategy_gets_one_list_with_every_servable_name_and_a_suggestion(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["predict", "--run", "reference", "--strategy", "stackd", "--out", "s.csv"])
    assert_one_line_error(result, "'stackd' is not a strategy", "did you mean 'stacked'?", "baseline_1",
                          "baseline_pair_bias", "control")
    line = result.stderr.strip()
    assert line.count("argmax") == 1 and line.count("learned3x3") == 1  # one list, not two
    assert not (tmp_path / "s.csv").exists()
    from ensemble.core.runfolder import RunFolder
    from ensemble.inference.strategies import servable_names

    listed = line.rsplit(": ", 1)[1].split(", ")
    assert listed == servable_names(RunFolder(shipped_run()))


# --- the TTA line in plain words ---------------------------------------------------------------------------

def test_the_served_tta_is_said_in_plain_words():
    from ensemble.inference.strategies import default_tta

    said = []
    assert default_tta(shipped_run(), "stacked", said.append) == "none"
    assert default_tta(shipped_run(), "baseline_pair_bias", said.append) == "flip"
    report = shipped_run() / "evaluation" / "report.json"
    assert said[0] == ("flip TTA not served for stacked: on the validation tiles it changed mIoU by -0.0006 "
                       f"[95 % CI -0.0056, +0.0045], an interval not above 0 ({report})")
    assert said[1].startswith("flip TTA served for baseline_pair_bias: on the validation tiles it changed mIoU by "
                              "+0.0045 [95 % CI +0.0015, +0.0077], an interval above 0")
    assert not any("flip - none" in line or line.startswith("tta ") for line in said)


# --- one prediction of two frames with every per-image output ------------------------------------------------

@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """``ensemble predict`` of two 256x256 frames by the shipped run's default strategy: overlays and
    uncertainty maps."""
    root = tmp_path_factory.mktemp("frames")
    _frames(root / "frames")
    result = CliRunner().invoke(main, ["predict", "--run", "reference", "--images", str(root / "frames"),
                                       "--scale", "2", "--overlay", str(root / "overlay"), "--uncertainty",
                                       str(root / "unc"), "--quiet"])
    assert result.exit_code == 0, result.output
    return root


def test_the_overlay_of_a_frame_is_as_wide_as_the_frame(predicted):
    """The overlay is the frame's width; the frame's rows hold the blended frame only (no white block beside
    it), and the legend below spans the width: every class swatch is drawn, in rows that each hold ink at the
    left, with ink in the right third of the band, and no all-white band taller than one legend row's gap."""
    with Image.open(predicted / "overlay" / "frame0.png") as image:
        overlay = np.asarray(image.convert("RGB"))
    height, width = overlay.shape[:2]
    assert width == FRAME and FRAME < height <= FRAME + 80
    white = (overlay == 255).all(axis=2)
    assert not white[:FRAME].all(axis=0).any()  # no all-white column beside the frame
    legend = overlay[FRAME:]
    for color in CLASS_COLORS:
        assert (legend == color).all(axis=2).sum() >= 25, color  # each swatch drawn
    ink = ~white[FRAME:]
    assert ink[:, 2 * FRAME // 3:].any()  # the legend uses the width instead of leaving it blank
    blank_rows = [len(run) for run in "".join("w" if r else "i" for r in ~ink.any(axis=1)).split("i")]
    assert max(blank_rows) <= 8


def test_the_uncertainty_maps_say_what_their_grey_levels_mean(predicted):
    from ensemble.predict import DISAGREEMENT_KEY, ENTROPY_KEY

    key = (predicted / "unc" / "KEY.txt").read_text()
    assert "255" in key and "five" in key and "entropy" in key and "disagreement" in key
    assert sorted(p.name for p in (predicted / "unc").iterdir()) == [
        "KEY.txt", "frame0_disagreement.png", "frame0_entropy.png", "frame1_disagreement.png", "frame1_entropy.png"]
    for name, expected in (("frame0_entropy.png", ENTROPY_KEY), ("frame1_disagreement.png", DISAGREEMENT_KEY)):
        with Image.open(predicted / "unc" / name) as image:
            assert image.mode == "L" and image.size == (FRAME, FRAME)
            assert image.text["Description"] == expected and expected in key
    assert "255 (white) = all five" in DISAGREEMENT_KEY and "share of the five" in DISAGREEMENT_KEY
    assert "255 (white) = the five classes equally likely" in ENTROPY_KEY


# --- confusion heatmaps drawn with matplotlib -------------------------------------------------------------------

def test_confusion_heatmap_is_a_matplotlib_figure_with_class_names_and_values(tmp_path, monkeypatch):
    drawn = []
    real = figures.save_figure

    def spy(fig, path, dpi):
        ax = fig.axes[0]
        drawn.append({"x": [t.get_text() for t in ax.get_xticklabels()],
                      "y": [t.get_text() for t in ax.get_yticklabels()],
                      "cells": [t.get_text() for t in ax.texts], "title": fig.get_suptitle()})
        real(fig, path, dpi)

    monkeypatch.setattr(figures, "save_figure", spy)
    cm = np.diag([0, 10, 20, 30, 40]) + 1
    cm[0] = 0  # no background pixels: that row is n/a
    figures.confusion_png(cm, tmp_path / "confusion_stacked.png", "stacked")
    assert drawn[0]["x"] == list(CLASS_NAMES) and drawn[0]["y"] == list(CLASS_NAMES)
    assert drawn[0]["title"] == "stacked" and len(drawn[0]["cells"]) == 25
    assert drawn[0]["cells"][:5] == ["n/a"] * 5 and drawn[0]["cells"][6] == f"{11 / 15:.2f}"
    data = (tmp_path / "confusion_stacked.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(tmp_path / "confusion_stacked.png") as image:
        width, height = figures.CONFUSION_FIGSIZE
        assert image.size == (round(width * figures.CONFUSION_DPI), round(height * figures.CONFUSION_DPI))
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # a colour map, not a few flat colours


# --- README: install only to use the shipped model -------------------------------------------------------------

def test_readme_install_section_has_an_install_only_command():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Install and quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", section, flags=re.S)
    code = "\n".join(blocks)
    assert re.search(r"pip install (-e )?\.(\s|$)", code), code
    assert re.search(r"ensemble predict .*--images", code), code
    assert "pip install" in code.split("ensemble predict")[0]  # installed first, then used
