"""Fusers over several networks of a run (members + baseline, baseline + its replica), their seeds,
their place in fuse / evaluate / predict / export, and the default strategy."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, assert_one_line_error, copy_run, load_script

from ensemble import api
from ensemble.cli import main
from ensemble.core.classes import BASELINE, CLASS_NAMES, control_names
from ensemble.core.errors import EnsembleError
from ensemble.core.runfolder import RunFolder
from fusion import FUSERS, BaselinePairFuser, HybridFuser, StackedFuser, load_fuser, new_fuser

MULTI_SOURCE = ("baseline_bias", "hybrid", "stacked", "baseline_pair", "baseline_pair_bias")


def _synthetic(n=10, h=16, w=32, seed=0):
    """Masks and three sources' logits that each carry the truth with independent noise."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, 5, (n, h, w), generator=g)
    onehot = torch.nn.functional.one_hot(masks, 5).permute(0, 3, 1, 2).float()
    sources = {}
    for name, scale in (("members", 1.0), ("baseline", 1.5), ("baseline_1", 1.5)):
        logits = 2 * onehot - 1 + scale * torch.randn(onehot.shape, generator=g)
        if name != "members":
            logits[:, 0] = -float("inf")  # a competition-run multiclass net never predicts class 0
        sources[name] = logits
    return masks, sources


def _inputs(fuser, sources):
    return torch.cat([sources[s] for s in fuser.sources], dim=1)


@pytest.mark.parametrize("name", MULTI_SOURCE)
def test_multi_source_fusers_fit_save_and_reload(name, tmp_path):
    masks, sources = _synthetic()
    fuser = new_fuser(name, "competition", seed=0)
    x = _inputs(fuser, sources)
    fused = fuser.fit(x, masks).predict_logits(x)
    assert fused.shape == (len(masks), 5, *masks.shape[1:])
    assert torch.isfinite(fused[:, 1:]).all() and torch.isinf(fused[:, 0]).all()
    assert (fuser.predict(x) > 0).all()  # class 0 is never predicted under competition
    again = load_fuser(fuser.save(tmp_path / f"{name}.pt"))
    assert torch.equal(again.predict_logits(x), fused)
    assert again.sources == FUSERS[name].sources


def test_wrong_number_of_input_channels_is_refused():
    masks, sources = _synthetic()
    with pytest.raises(ValueError, match=r"input logits must have shape \(N, 10, H, W\)"):
        HybridFuser().fit(sources["members"], masks)


def test_baseline_pair_is_the_mean_of_the_two_softmaxes():
    masks, sources = _synthetic()
    pair = BaselinePairFuser(objective="competition")
    x = _inputs(pair, sources)
    expected = (torch.softmax(sources["baseline"], 1) + torch.softmax(sources["baseline_1"], 1)) / 2
    assert torch.allclose(pair.fit(x, masks).predict_proba(x), expected, atol=1e-6)


def test_fitted_mix_beats_or_ties_the_fixed_half_on_the_fit_pixels():
    masks, sources = _synthetic()
    sources["baseline_1"] = sources["baseline_1"] + 3 * torch.randn(sources["baseline_1"].shape)  # a poor second net
    fitted = BaselinePairFuser(mix=None).fit(_inputs(BaselinePairFuser(), sources), masks)
    assert fitted.mix_ > 0.5  # the better first source gets more weight
    assert fitted.fit_info_["mix_fitted"] is True


def test_hybrid_without_a_member_ignores_its_logits():
    masks, sources = _synthetic()
    hybrid = HybridFuser(drop_member=4, objective="competition")
    x = _inputs(hybrid, sources)
    fused = hybrid.fit(x, masks).predict_logits(x)
    changed = x.clone()
    changed[:, 4] += 5 * torch.randn(changed[:, 4].shape)
    assert torch.equal(hybrid.predict_logits(changed), fused)
    assert not torch.equal(HybridFuser().fit(x, masks).predict_logits(changed),
                           HybridFuser().fit(x, masks).predict_logits(x))


def test_stacked_starts_at_the_mean_of_the_sources_class_logits():
    kernel = StackedFuser()._initial_kernel()[:, :, 0, 0]
    assert torch.equal(kernel, torch.cat([torch.eye(5), torch.eye(5)], dim=1) / 2)
    masks, sources = _synthetic()
    frozen = StackedFuser(max_epochs=0, objective="competition")  # no training step: the start is kept
    x = _inputs(frozen, sources)
    frozen.fit(x, masks)
    start = (sources["members"] + torch.where(torch.isinf(sources["baseline"]), 0.0, sources["baseline"])) / 2
    expected = start[:, 1:] + frozen.offsets_[1:].reshape(1, -1, 1, 1)
    assert torch.allclose(frozen.predict_logits(x)[:, 1:], expected, atol=1e-5)


def test_every_network_of_a_run_has_its_own_seed(tmp_path, subset_path):
    from ensemble.core.data import load_data
    from ensemble.recipe import TrainOptions
    from ensemble.train import plan_training
    from members.config import TrainConfig

    names = [*CLASS_NAMES, BASELINE, "baseline_1", "baseline_2", *control_names(5)]
    plan = plan_training(names, data=load_data(subset_path), run=tmp_path / "run",
                         options=TrainOptions(epochs=1, width=4, device="cpu"))
    seeds = [TrainConfig(**task.config).network_seed() for task in plan.tasks]
    assert len(set(seeds)) == len(seeds)
    configs = {t.name: t.config for t in plan.tasks}
    same = {k: v for k, v in configs["baseline_1"].items() if k not in ("name", "seed_from_name")}
    assert same == {k: v for k, v in configs[BASELINE].items() if k not in ("name", "seed_from_name")}


def test_a_run_recording_a_network_with_the_baselines_seed_refuses_more(tmp_path, subset_path):
    """A control net recorded by the old seed rule (replica 0: the baseline's seed) is caught at planning."""
    from ensemble.core.data import load_data
    from ensemble.recipe import TrainOptions
    from ensemble.train import plan_training

    run = tmp_path / "run"
    data = load_data(subset_path)
    options = TrainOptions(epochs=1, width=4, device="cpu")
    plan_training(["control_0"], data=data, run=run, options=options)
    config = json.loads((run / "config.json").read_text())
    config["networks"]["control_0"].pop("seed_from_name")  # as written before seeds were drawn from names
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(EnsembleError, match="baseline would train with the seed of control_0"):
        plan_training([BASELINE], data=data, run=run, options=options)


@pytest.fixture(scope="module")
def fuse_all(tiny_run, tmp_path_factory, subset_path):
    """The tiny run with the baseline's replica trained and ``ensemble fuse --strategy all`` run on it: the run and
    the command's result."""
    run = copy_run(tiny_run, tmp_path_factory.mktemp("combined"))
    api.baseline(data=str(subset_path), run=str(run), replicas=2, **{**TINY, "width": None})
    return run, CliRunner().invoke(main, ["fuse", "--run", str(run), "--data", str(subset_path), "--strategy", "all"])


@pytest.fixture(scope="module")
def full_run(fuse_all):
    """The tiny run with the baseline's replica trained and every strategy fitted."""
    return fuse_all[0]


def test_fuse_all_fits_every_strategy_on_the_validation_tiles_and_skips_what_the_run_lacks(fuse_all, subset_path):
    run, result = fuse_all
    assert result.exit_code == 0, result.output
    assert "NLL" in result.output and "ECE" in result.output and "validation IoU" in result.output
    # every source but the distilled student (tests/test_distill.py fits student_bias over one): that strategy is
    # skipped, saying what to train
    assert sorted(RunFolder(run).fuser_names()) == sorted(set(FUSERS) - {"student_bias"})
    assert f"skipping student_bias: it needs student (ensemble distill --run {run})" in result.output
    manifest = json.loads((run / "manifest.json").read_text())
    ids = np.load(subset_path)["training_ids"]
    val_ids, train_ids = set(ids[manifest["split"]["val_indices"]]), set(ids[manifest["split"]["train_indices"]])
    for name in RunFolder(run).fuser_names():
        fitted = set(load_fuser(run / "fusion" / f"{name}.pt").fitted_tile_ids_)
        assert fitted == val_ids and not fitted & train_ids, name  # only tiles the networks never saw
    assert (run / "cache" / "val_logits.npy").exists()
    again = CliRunner().invoke(main, ["fuse", "--run", str(run), "--data", str(subset_path), "--strategy", "argmax"])
    assert again.exit_code == 0 and "computing member logits" not in again.output  # the cache is reused


def test_fuse_refuses_a_strategy_whose_networks_are_missing(tiny_run, subset_path):
    # `--strategy all` skips it instead, saying so: test_fuse_all_fits_every_strategy_on_the_validation_tiles_...
    result = CliRunner().invoke(main, ["fuse", "--run", str(tiny_run), "--data", str(subset_path),
                                       "--strategy", "baseline_pair", "--quiet"])
    assert_one_line_error(result, "--strategy baseline_pair", "baseline_1", "--replicas 2")


def test_evaluate_scores_every_model_and_records_the_best(full_run, subset_path, tmp_path):
    # in-sample (the saved fusers): what is checked here is the table, not the folds (tests/test_evaluate_predict.py)
    result = api.evaluate(run=str(full_run), data=str(subset_path), out=str(tmp_path / "ev"), cross_fit=0,
                          quiet=True, ablation=True)
    table = result["table"]
    for name in (*MULTI_SOURCE, BASELINE, "learned"):
        assert name in table["models"], name
    headline = table["headline"]
    served = [n for n in table["order"] if n in FUSERS or n == BASELINE]
    best = max(served, key=lambda n: table["models"][n]["miou"][headline])
    assert table["best_strategy"] == best
    budgets = {b["budget"]: b for b in table["budgets"]}
    twice = budgets["twice the baseline's budget"]
    assert [d["model"] for d in twice["differences"]][:2] == ["hybrid", "stacked"]
    for d in twice["differences"]:
        assert d["low"] <= d["diff"] <= d["high"]
    minutes = {r["model"]: r["minutes"] for b in table["budgets"] for r in b["rows"]}
    assert minutes["baseline_pair"] > minutes[BASELINE] > 0  # two nets of the baseline's size
    assert minutes["hybrid"] == pytest.approx(minutes["learned"] + minutes[BASELINE])
    assert [r["variant"] for r in table["ablation"]] == [*(f"without {c}" for c in CLASS_NAMES), "weight fitted"]
    md = (tmp_path / "ev" / "report.md").read_text()
    assert "## Equal-compute comparison" in md and "## Which members the hybrid needs" in md
    assert f"`{best}`" in md


def test_predict_serves_the_recorded_best_and_says_so(full_run, subset_path, tmp_path):
    run = copy_run(full_run, tmp_path)
    evaluation = RunFolder(run).evaluation_dir
    evaluation.mkdir(exist_ok=True)
    (evaluation / "report.json").write_text(json.dumps({"table": {"best_strategy": "stacked"}}))
    result = CliRunner().invoke(main, ["predict", "--run", str(run), "--data", str(subset_path),
                                       "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    assert "strategy stacked: the run's best" in result.stderr
    assert "(stacked)" in result.stdout
    (evaluation / "report.json").unlink()
    result = CliRunner().invoke(main, ["predict", "--run", str(run), "--data", str(subset_path),
                                       "--out", str(tmp_path / "s.csv"), "--quiet"])
    assert result.exit_code == 0 and "(learned)" in result.stdout


def test_evaluate_tta_gain_records_each_served_models_tta(full_run, subset_path, tmp_path):
    result = api.evaluate(run=str(full_run), data=str(subset_path), out=str(tmp_path / "ev"), cross_fit=0,
                          quiet=True, tta_gain=True)
    table = result["table"]
    gain = table["tta_gain"]
    names = [row["model"] for row in gain["rows"]]
    assert {BASELINE, "learned", "hybrid", "stacked", "baseline_pair_bias"} <= set(names)
    assert table["best_strategy"] in names
    for row in gain["rows"]:
        assert row["miou_none"] == pytest.approx(table["models"][row["model"]]["miou"][table["headline"]])
        assert row["low"] <= row["diff"] <= row["high"]
        assert row["default"] == ("flip" if row["low"] > 0 else "none") == gain["defaults"][row["model"]]
    assert "## Flip TTA" in (tmp_path / "ev" / "report.md").read_text()
    result = CliRunner().invoke(main, ["evaluate", "--run", str(full_run), "--data", str(subset_path), "--tta-gain",
                                       "--tta", "flip", "--out", str(tmp_path / "ev2")])
    assert_one_line_error(result, "--tta-gain", "--tta none")


def _record_flip_for(run, strategy):
    """A report saying ``strategy`` is the run's best and gains from flip TTA."""
    evaluation = RunFolder(run).evaluation_dir
    evaluation.mkdir(exist_ok=True)
    row = {"model": strategy, "miou_none": 0.5, "miou_flip": 0.51, "diff": 0.01, "low": 0.002, "high": 0.02,
           "default": "flip"}
    (evaluation / "report.json").write_text(json.dumps(
        {"table": {"best_strategy": strategy, "tta_gain": {"rows": [row], "defaults": {strategy: "flip"}}}}))


def test_the_recorded_tta_is_served_by_default_and_an_explicit_one_wins(full_run, subset_path, tmp_path):
    run = copy_run(full_run, tmp_path)
    _record_flip_for(run, "hybrid")
    images = np.load(subset_path)["test_set"][:3]
    served = api.predictor(run=str(run))
    assert (served.strategy, served.tta) == ("hybrid", "flip")
    assert api.predictor(run=str(run), strategy="learned").tta == "none"  # nothing recorded for learned
    flip = api.predictor(run=str(run), strategy="hybrid", tta="flip").predict(images)
    assert np.array_equal(served.predict(images), flip)
    result = CliRunner().invoke(main, ["predict", "--run", str(run), "--data", str(subset_path),
                                       "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    assert ("flip TTA served for hybrid: on the validation tiles it changed mIoU by +0.0100 [95 % CI +0.0020, "
            "+0.0200], an interval above 0") in result.stderr
    result = CliRunner().invoke(main, ["predict", "--run", str(run), "--data", str(subset_path), "--tta", "none",
                                       "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0 and "flip TTA" not in result.stderr


def test_an_export_bakes_in_the_recorded_flip(full_run, subset_path, tmp_path):
    import onnxruntime

    from ensemble.inference.export import load_exported

    run = copy_run(full_run, tmp_path)
    _record_flip_for(run, "learned")
    images = np.load(subset_path)["test_set"][:3]
    expected = api.predictor(run=str(run), strategy="learned", tta="flip", engine="torch").predict_proba(images)
    plain = api.predictor(run=str(run), strategy="learned", tta="none", engine="torch").predict_proba(images)
    assert not np.allclose(expected, plain, atol=1e-4)  # the flip changes the probabilities, so the test can fail
    x = torch.from_numpy(images[:, None].astype(np.float32) / 255)
    result = api.export(run=str(run), out=str(tmp_path / "m.pt2"))
    assert result["tta"] == "flip"
    with torch.no_grad():
        assert np.allclose(load_exported(result["out"])(x).numpy(), expected, atol=1e-4)
    onnx = api.export(run=str(run), out=str(tmp_path / "m.onnx"))["out"]
    assert np.allclose(onnxruntime.InferenceSession(onnx).run(None, {"images": x.numpy()})[0], expected, atol=1e-4)


@pytest.mark.parametrize("strategy", ["hybrid", "stacked", "baseline_pair_bias"])
def test_multi_source_exports_reproduce_the_predictor(full_run, subset_path, tmp_path, strategy):
    import onnxruntime

    from ensemble.inference.export import load_exported

    images = np.load(subset_path)["test_set"][:3]
    expected = api.predictor(run=str(full_run), strategy=strategy, engine="torch").predict_proba(images)
    x = torch.from_numpy(images[:, None].astype(np.float32) / 255)
    pt2 = api.export(run=str(full_run), strategy=strategy, out=str(tmp_path / "m.pt2"))["out"]
    with torch.no_grad():
        assert np.allclose(load_exported(pt2)(x).numpy(), expected, atol=1e-4)
    onnx = api.export(run=str(full_run), strategy=strategy, out=str(tmp_path / "m.onnx"))["out"]
    got = onnxruntime.InferenceSession(onnx).run(None, {"images": x.numpy()})[0]
    assert np.allclose(got, expected, atol=1e-4)


def test_onnxruntime_and_torch_engines_agree_on_the_hybrid(full_run, subset_path):
    images = np.load(subset_path)["test_set"][:4]
    a = api.predictor(run=str(full_run), strategy="hybrid", engine="torch").predict_proba(images)
    b = api.predictor(run=str(full_run), strategy="hybrid", engine="onnxruntime").predict_proba(images)
    assert np.allclose(a, b, atol=1e-4)


def test_tta_gain_script_pairs_every_served_strategy(full_run, subset_path):
    from ensemble.core.data import load_data

    tta_gain = load_script("tta_gain")
    result = tta_gain.measure(str(copy_run(full_run, full_run.parent / "tta")), load_data(subset_path), cross_fit=0,
                              n_boot=50, timing_tiles=8)
    names = [row["model"] for row in result["rows"]]
    assert {"baseline", "learned", "hybrid", "stacked", "baseline_pair_bias"} <= set(names)
    for row in result["rows"]:
        assert row["low"] <= row["diff"] <= row["high"]
        assert row["diff"] == pytest.approx(row["miou_flip"] - row["miou_none"], abs=1e-9)
        assert row["seconds_flip"] > 0 and row["seconds_none"] > 0
    assert "flip - none" in tta_gain.format_rows(result)
