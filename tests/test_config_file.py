"""Recipe files (--config) and starting from trained weights (--init-from): layers, round trip, errors, records."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import assert_one_line_error

from ensemble import api, train
from ensemble.cli import main
from ensemble.core.data import load_data
from ensemble.core.locations import shipped_run
from ensemble.core.runfolder import RunFolder
from ensemble.recipe import TrainOptions
from ensemble.train import network_config
from members.batches import SplitArrays
from members.checkpoint import load_checkpoint
from members.config import TrainConfig
from members.training import NetworkTrainer

#: The CLI's spelling of conftest.TINY.
TINY_ARGS = ["--epochs", "1", "--samples-per-epoch", "48", "--quiet"]


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _state(run, name):
    return load_checkpoint(RunFolder(run).best_path(name))["model"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, subset_path):
    """A tiny run with the soil member (width 4) and a baseline matched to it, seed 3 and lr 0.01 from --set."""
    run = tmp_path_factory.mktemp("source") / "a"
    for verb in (["train", "--members", "soil", "--width", "4"], ["baseline"]):
        result = _invoke(*verb, "--data", subset_path, "--run", run, "--seed", "3", "--set", "lr=0.01", *TINY_ARGS)
        assert result.exit_code == 0, result.output
    return run


@pytest.fixture
def planned(monkeypatch):
    """Training verbs plan their run (config.json, manifest) but train nothing."""
    def dispatch(plan, *, data=None):
        return [{"name": n, "skipped": True, "epochs_run": 0, "best_epoch": 0, "best_val_iou": 0.0, "parameters": 0,
                 "seconds": 0.0} for n in plan.names]

    monkeypatch.setattr(train, "dispatch", dispatch)


def _write(path, text):
    path.write_text(text)
    return path


# --- layers ----------------------------------------------------------------------------------------------------------

def test_layers_preset_file_set_explicit(tmp_path):
    """preset < file < --set < explicit options, key by key; the file's settings are the run's unless given."""
    recipe = _write(tmp_path / "r.toml", "lr = 0.01\nepochs = 7\nsamples_per_epoch = 96\nmodel.dropout = 0.1\n"
                                         "[settings]\nseed = 3\nval_fraction = 0.2\n[big_rock]\nsampler_weight = 6\n")
    settings = {"objective": "competition", "seed": 0}
    quick = network_config("big_rock", settings=settings, width=4, options=TrainOptions(preset="quick"))
    assert (quick.lr, quick.epochs, quick.samples_per_epoch, quick.sampler_weight) == (3e-3, 3, 640, 4.0)
    options = TrainOptions.from_arguments(config=recipe, preset="quick")
    filed = network_config("big_rock", settings=settings, width=4, options=options)
    assert (filed.lr, filed.epochs, filed.samples_per_epoch, filed.sampler_weight, filed.model["dropout"]) == \
        (0.01, 7, 96, 6.0, 0.1)
    assert filed.val_tiles == 384  # the preset's, which the file leaves alone
    assert (options.seed, options.val_fraction) == (3, 0.2)
    options = TrainOptions.from_arguments(config=recipe, overrides=["lr=0.05", "epochs=5"])
    both = network_config("big_rock", settings=settings, width=4, options=options)
    assert (both.lr, both.epochs, both.samples_per_epoch) == (0.05, 5, 96)
    options = TrainOptions.from_arguments(config=recipe, overrides=["epochs=5"], epochs=2, samples_per_epoch=48,
                                          width=6, seed=1, val_fraction=0.3)
    explicit = network_config("big_rock", settings=settings, width=6, options=options)
    assert (explicit.epochs, explicit.samples_per_epoch, explicit.model["width"]) == (2, 48, 6)
    assert (options.seed, options.val_fraction) == (1, 0.3)


def test_cli_settings_come_from_the_file_unless_given(tmp_path, subset_path, planned):
    recipe = _write(tmp_path / "r.json", json.dumps({"settings": {"seed": 4}, "lr": 0.02, "baseline": {"epochs": 2}}))
    run = tmp_path / "run"
    result = _invoke("baseline", "--data", subset_path, "--run", run, "--config", recipe, "--quiet")
    assert result.exit_code == 0, result.output
    config = RunFolder(run).config()
    assert config["settings"]["seed"] == 4 and config["networks"]["baseline"]["seed"] == 4
    assert (config["networks"]["baseline"]["lr"], config["networks"]["baseline"]["epochs"]) == (0.02, 2)
    other = tmp_path / "other"
    result = _invoke("baseline", "--data", subset_path, "--run", other, "--config", recipe, "--seed", "5",
                     "--epochs", "1", "--set", "lr=0.03", "--quiet")
    assert result.exit_code == 0, result.output
    entry = RunFolder(other).config()["networks"]["baseline"]
    assert (entry["seed"], entry["epochs"], entry["lr"]) == (5, 1, 0.03)


@pytest.mark.parametrize("verb", ["train", "baseline", "control", "distill", "run"])
def test_every_training_verb_says_the_precedence(verb):
    help_text = " ".join(_invoke(verb, "--help").output.split())
    assert "--config FILE" in help_text and "preset < file < --set < options given here" in help_text
    assert "--init-from RUN" in help_text


# --- round trip ------------------------------------------------------------------------------------------------------

def test_a_runs_config_json_reproduces_its_weights(tmp_path, subset_path, source_run):
    """B made from A's config.json alone (no other training option) has A's configs and, after its epoch, A's
    weights exactly; the API takes the file too."""
    copy = tmp_path / "b"
    result = _invoke("baseline", "--data", subset_path, "--run", copy, "--config", source_run / "config.json",
                     "--quiet")
    assert result.exit_code == 0, result.output
    api.train(data=str(subset_path), run=str(copy), members="soil", config=str(source_run / "config.json"),
              quiet=True)
    assert RunFolder(copy).config() == RunFolder(source_run).config()
    for name in ("soil", "baseline"):
        _assert_same_weights(_state(copy, name), _state(source_run, name))
    assert RunFolder(copy).manifest()["split"] == RunFolder(source_run).manifest()["split"]


def test_a_file_asking_other_run_settings_is_refused_like_the_options(tmp_path, subset_path, source_run):
    recipe = _write(tmp_path / "r.toml", '[settings]\nobjective = "fullmask"\nseed = 3\n')
    before = (source_run / "config.json").read_bytes()
    result = _invoke("baseline", "--data", subset_path, "--run", source_run, "--config", recipe, "--quiet")
    assert_one_line_error(result, f"--config {recipe}", "objective='competition'", "settings.objective",
                          "use a new --run")
    assert (source_run / "config.json").read_bytes() == before


# --- bad files -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, fragments", [
    ("missing.toml", None, ["missing.toml: not found"]),
    ("r.yaml", "lr: 1", ["r.yaml: expected a .toml or .json file"]),
    ("r.toml", "lr = \n", ["r.toml: not valid TOML (", "line 1"]),
    ("r.json", '{"lr": 0.1,}', ["r.json: not valid JSON ("]),
    ("r.json", "[1, 2]", ["r.json: expected a table of keys at the top"]),
    ("r.toml", "nope = 1\n", ["r.toml: nope: unknown key; valid:", "settings", "lr"]),
    ("r.toml", "model.nope = 1\n", ["r.toml: model.nope: unknown setting"]),
    ("r.toml", 'lr = "fast"\n', ['r.toml: lr="fast": expected a float like 0.002']),
    ("r.toml", "[big_rock]\naugment.hflip = 1\n", ["r.toml: [big_rock] augment.hflip=1: expected a bool"]),
    ("r.toml", "[members]\nema_decay = 1.5\n", ["r.toml: [members] ema_decay: 1.5 is outside"]),
    ("r.toml", "seed = 2\n", ["r.toml: seed: a run setting", "[settings]"]),
    ("r.toml", "[settings]\nseed = -1\n", ["r.toml: settings.seed: expected an integer >= 0, got -1"]),
    ("r.toml", '[settings]\nobjective = "best"\n', ["settings.objective: expected one of competition, fullmask"]),
    ("r.toml", "[settings]\nsplit = 1\n", ["settings.split: unknown run setting"]),
    ("r.toml", "[networks.rock]\nlr = 1\n", ["networks.rock: unknown network"]),
    ("r.toml", "[networks.soil]\ntarget = 2\n", ["networks.soil.target: expected 1 for network soil, got 2"]),
    ("r.toml", "[networks.soil]\nlr = true\n", ["networks.soil.lr: expected a float"]),
    ("r.toml", "[networks.baseline.model]\nout_channels = 1\n", ["networks.baseline.model.out_channels: expected 5"]),
    ("r.toml", "[settings]\nseed = 1\n[networks.soil]\nseed = 2\n", ["networks.soil.seed: 2, but the file's"]),
    ("r.toml", "[members]\ndistill.alpha = 0.3\n", ["distill.alpha: only the student learns from a teacher"]),
])
def test_a_bad_file_is_one_line_naming_it_and_the_key(tmp_path, subset_path, name, text, fragments):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    run = tmp_path / "run"
    result = _invoke("train", "--data", subset_path, "--run", run, "--config", path)
    assert_one_line_error(result, f"--config {path}", *fragments)
    assert not run.exists()


def test_the_api_names_the_argument(tmp_path):
    with pytest.raises(Exception, match=r"^config=.*missing\.toml: not found$"):
        api.baseline(run=str(tmp_path / "run"), config=str(tmp_path / "missing.toml"))


# --- --init-from -----------------------------------------------------------------------------------------------------

def test_init_from_starts_from_the_source_weights_and_records_them(tmp_path, subset_path, source_run, planned):
    run = tmp_path / "b"
    source_width = RunFolder(source_run).config()["networks"]["baseline"]["model"]["width"]
    result = _invoke("baseline", "--data", subset_path, "--run", run, "--init-from", source_run, "--width",
                     source_width, "--set", "lr=0.02", "--quiet")
    assert result.exit_code == 0, result.output
    folder = RunFolder(run)
    best = RunFolder(source_run).best_path("baseline")
    record = {"run": str(source_run.resolve()), "sha256": hashlib.sha256(best.read_bytes()).hexdigest()}
    assert folder.config()["networks"]["baseline"]["init_from"] == record
    assert folder.manifest()["init_from"] == {"baseline": record}
    config = TrainConfig(**folder.config()["networks"]["baseline"])
    assert config.lr == 0.02  # the new run's recipe; only the weights come from the source
    again = tmp_path / "c"  # the config.json given back starts from the same weights
    assert _invoke("baseline", "--data", subset_path, "--run", again, "--config", run / "config.json").exit_code == 0
    assert RunFolder(again).config()["networks"]["baseline"]["init_from"] == record
    data = load_data(subset_path)
    manifest = folder.manifest()
    split = SplitArrays.select(data.images, data.masks, np.asarray(manifest["split"]["train_indices"]),
                               np.asarray(manifest["split"]["val_indices"]))
    trainer = NetworkTrainer(config, split, folder.network_dir("baseline"))
    assert trainer.epoch == 0
    _assert_same_weights({k: v.contiguous() for k, v in trainer.model.state_dict().items()},
                         _state(source_run, "baseline"))
    fresh = NetworkTrainer(TrainConfig(**{**config.to_dict(), "init_from": {}}), split, tmp_path / "fresh")
    assert not torch.equal(next(fresh.model.parameters()), next(trainer.model.parameters()))


def test_without_init_from_nothing_is_recorded(tmp_path, subset_path, planned):
    run = tmp_path / "run"
    assert _invoke("baseline", "--data", subset_path, "--run", run, "--quiet").exit_code == 0
    assert "init_from" not in RunFolder(run).config()["networks"]["baseline"]
    assert "init_from" not in RunFolder(run).manifest()
    assert "init_from" not in TrainConfig(name="soil").to_dict()


def test_init_from_another_architecture_or_a_missing_network_is_refused_before_anything(tmp_path, subset_path,
                                                                                       source_run):
    run = tmp_path / "run"
    result = _invoke("train", "--data", subset_path, "--run", run, "--members", "soil", "--init-from", source_run,
                     "--width", "6", *TINY_ARGS)
    assert_one_line_error(result, f"--init-from {source_run}: network soil is a U-Net of width 4, depth 3, 1 output "
                                  "there, a U-Net of width 6, depth 3, 1 output here")
    assert not run.exists()
    result = _invoke("train", "--data", subset_path, "--run", run, "--members", "soil,sand", "--init-from",
                     source_run, "--width", "4", *TINY_ARGS)
    assert_one_line_error(result, f"--init-from {source_run}: network sand is not there", "it has baseline, soil")
    assert not run.exists()
    result = _invoke("baseline", "--data", subset_path, "--run", run, "--init-from", tmp_path / "nowhere")
    assert_one_line_error(result, "nowhere: not a run folder")


def test_a_started_network_resumes_and_ignores_init_from(tmp_path, subset_path, source_run, planned):
    run = tmp_path / "run"
    args = ["train", "--data", subset_path, "--run", run, "--members", "soil", "--width", "4", *TINY_ARGS]
    assert _invoke(*args).exit_code == 0
    RunFolder(run).network_dir("soil").mkdir(parents=True)
    (RunFolder(run).network_dir("soil") / "latest.pt").write_bytes(b"started")  # planned, then interrupted
    result = _invoke(*[a for a in args if a != "--quiet"], "--init-from", source_run)
    assert result.exit_code == 0, result.output
    assert "soil resumes from its latest.pt: --init-from" in result.output
    assert "init_from" not in RunFolder(run).config()["networks"]["soil"]


def _tree(path):
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_init_from_the_shipped_run_trains_and_never_writes_into_it(tmp_path, subset_path):
    reference = shipped_run()
    before, listing = _tree(reference), sorted(os.listdir(reference))
    run = tmp_path / "mine"
    result = _invoke("baseline", "--data", subset_path, "--init-from", "reference", "--run", run, *TINY_ARGS)
    assert result.exit_code == 0, result.output
    assert _tree(reference) == before and sorted(os.listdir(reference)) == listing
    record = RunFolder(run).config()["networks"]["baseline"]["init_from"]
    assert record["run"] == str(reference.resolve())
    assert record["sha256"] == RunFolder(reference).manifest()["checksums"]["baseline/best.pt"]
    assert json.loads((run / "baseline" / "metrics.json").read_text())["finished"]


def test_run_takes_the_file_and_init_from_into_its_one_plan(tmp_path, subset_path, source_run, monkeypatch):
    """`ensemble run --config A/config.json` plans every network with A's recipe and seed; with --distill, an
    --init-from run without a student is refused before anything trains."""
    calls = []

    def dispatched(names, *, run, data=None, options=None, log=print):
        calls.append(options)
        return [{"name": name, "failed": True, "error": "stopped by the test"} for name in names]

    monkeypatch.setattr(train, "train_networks", dispatched)
    result = _invoke("run", "--data", subset_path, "--run", tmp_path / "b", "--config", source_run / "config.json",
                     "--init-from", source_run, "--quiet")
    assert_one_line_error(result, "members failed")
    (options,) = calls
    assert options.seed == 3 and options.recipe.path == str(source_run / "config.json")
    assert options.init_from == str(source_run)
    result = _invoke("run", "--data", subset_path, "--run", tmp_path / "c", "--init-from", source_run, "--distill")
    assert_one_line_error(result, f"--init-from {source_run}: network student is not there")
    assert len(calls) == 1 and not (tmp_path / "c").exists()
