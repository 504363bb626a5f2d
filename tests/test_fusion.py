"""Fusion strategies on small synthetic logits: shapes, calibration, recovery, persistence, errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fusion
from ensemble.core.errors import RunError
from ensemble.core.metrics import nll
from fusion.modules import FusionConv
from fusion.sampling import sample_windows

#: The strategies over the member logits alone (the others read several networks: tests/test_combined.py).
MEMBER_LEVEL = tuple(name for name in fusion.STRATEGIES if fusion.FUSERS[name].sources == ("members",))

#: Fast settings per strategy so every fit takes a fraction of a second.
FAST = {
    "argmax": {},
    "bias": {"max_pixels": 4000, "steps": 9, "rounds": 2},
    "calibrated": {"max_pixels": 4000},
    "learned": {"max_epochs": 5, "max_pixels": 4000, "batch_pixels": 1024},
    "learned3x3": {"max_epochs": 5, "max_pixels": 4000, "batch_pixels": 1024},
}


def blocky_masks(n, height=16, width=24, block=4, seed=0):
    """Random masks (N, H, W) int64 made of ``block`` x ``block`` squares of one class."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, 5, (n, height // block, width // block), generator=generator)
    return cells.repeat_interleave(block, 1).repeat_interleave(block, 2)


def clean_logits(masks, margin=3.0, noise=1.0, seed=1):
    """Class logits (N, 5, H, W): ``margin`` on the true class plus Gaussian ``noise``."""
    generator = torch.Generator().manual_seed(seed)
    onehot = F.one_hot(masks, 5).permute(0, 3, 1, 2).float()
    return margin * onehot + noise * torch.randn(onehot.shape, generator=generator)


@pytest.fixture(scope="module")
def data():
    """(member_logits, masks, tile_ids) for 12 tiles of 16x24."""
    masks = blocky_masks(12)
    return clean_logits(masks), masks, [f"tile-{i:03d}" for i in range(12)]


@pytest.fixture(scope="module")
def fitted(data):
    """One fitted fuser per strategy, fitted on ``data``."""
    logits, masks, ids = data
    return {name: fusion.get_fuser(name, **FAST[name]).fit(logits, masks, ids) for name in MEMBER_LEVEL}


@pytest.mark.parametrize("name", MEMBER_LEVEL)
def test_probabilities_sum_to_one_and_masks_in_range(fitted, data, name):
    logits = data[0]
    fuser = fitted[name]
    probs = fuser.predict_proba(logits.numpy())  # numpy input is accepted too
    assert probs.shape == logits.shape and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(dim=1), torch.ones(()), atol=1e-5)
    pred = fuser.predict(logits)
    assert pred.shape == data[1].shape and pred.dtype == torch.int64
    assert int(pred.min()) >= 0 and int(pred.max()) <= 4
    assert torch.equal(pred, fuser.predict_logits(logits).argmax(dim=1))
    assert fuser.fitted_tile_ids_ == data[2]
    assert fuser.describe() and all(isinstance(line, str) for line in fuser.describe())


def test_argmax_keeps_member_logits(fitted, data):
    fused_logits = fitted["argmax"].predict_logits(data[0])  # competition: class 0 blocked, the rest unchanged
    assert torch.equal(fused_logits[:, 1:], data[0][:, 1:]) and torch.all(fused_logits[:, 0] == float("-inf"))
    full = fusion.ArgmaxFuser(objective="fullmask").fit(*data[:2])
    assert torch.equal(full.predict_logits(data[0]), data[0])


@pytest.mark.parametrize("name", MEMBER_LEVEL)
def test_competition_fusers_never_predict_background_and_ignore_unlabeled_pixels(data, name):
    logits, masks, _ = data
    fuser = fusion.get_fuser(name, **FAST[name]).fit(logits, masks)
    assert fuser.objective == "competition" and int((fuser.predict(logits) == 0).sum()) == 0
    assert torch.all(fuser.predict_proba(logits)[:, 0] == 0)
    # the logits of unlabeled pixels are never looked at: scrambling them leaves the fit unchanged
    scrambled = torch.where((masks == 0)[:, None], torch.randn(logits.shape), logits)
    refit = fusion.get_fuser(name, **FAST[name]).fit(scrambled, masks)
    if name == "learned3x3":  # its windows reach into unlabeled neighbours; only the pixels drawn are the same
        return
    assert torch.equal(refit.predict_logits(logits), fuser.predict_logits(logits))
    full = fusion.get_fuser(name, **{**FAST[name], "objective": "fullmask"}).fit(logits, masks)
    assert int((full.predict(logits) == 0).sum()) > 0


def test_fuser_file_of_format_1_loads_as_fullmask(fitted, tmp_path):
    path = fitted["learned"].save(tmp_path / "learned.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 1
    del payload["init"]["objective"]
    torch.save(payload, path)
    loaded = fusion.load_fuser(path)
    assert loaded.objective == "fullmask" and torch.equal(loaded.weight_, fitted["learned"].weight_)


def test_calibrated_lowers_nll_of_overconfident_logits():
    masks = blocky_masks(10, seed=3)
    overconfident = 5.0 * clean_logits(masks, margin=1.0, noise=1.0, seed=4)  # ideal temperature: 5
    fuser = fusion.CalibratedFuser(max_pixels=3000, objective="fullmask").fit(overconfident, masks)
    before = nll(torch.softmax(overconfident, dim=1), masks)
    after = nll(fuser.predict_proba(overconfident), masks)
    assert after < before - 0.1
    assert torch.all(fuser.temperatures_ > 3) and torch.all(fuser.temperatures_ < 7)
    assert torch.allclose(fuser.temperatures_, 1 / fuser.scales_)
    assert abs(float(fuser.biases_.mean())) < 1e-6


def test_learned_recovers_a_linear_mixing():
    masks = blocky_masks(16, seed=5)
    class_logits = clean_logits(masks, margin=4.0, noise=0.5, seed=6)
    perm = torch.tensor([2, 0, 4, 1, 3])  # member channel j carries class perm[j]
    scales = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.7])
    member_logits = scales[None, :, None, None] * class_logits[:, perm]
    identity_acc = float((member_logits.argmax(dim=1) == masks).float().mean())
    fuser = fusion.LearnedFuser(max_epochs=40, lr=0.1, patience=40, batch_pixels=512, seed=0, objective="fullmask")
    fuser.fit(member_logits, masks)
    accuracy = float((fuser.predict(member_logits) == masks).float().mean())
    assert identity_acc < 0.5 and accuracy > 0.98
    # the strongest fused class of each member column is the class that member carries
    weight = fuser.weight_ - fuser.weight_.mean(dim=0, keepdim=True)  # softmax ignores per-column shifts
    assert torch.equal(weight.argmax(dim=0), perm)
    info = fuser.fit_info_
    assert info["holdout_miou_best"] >= info["holdout_miou_identity"] and info["best_epoch"] > 0


def test_bias_undoes_a_shifted_class_logit_and_lifts_the_mean_iou():
    from ensemble.core.metrics import confusion_matrix, mean_iou

    masks = blocky_masks(16, seed=7)
    shifted = clean_logits(masks, margin=4.0, noise=1.0, seed=8)
    shifted[:, 3] -= 3.0  # sand under-predicted, as a class weight or a misfit threshold would do
    fuser = fusion.BiasFuser(max_pixels=20_000, seed=0).fit(shifted, masks)
    assert 2.0 < float(fuser.biases_[3]) - float(fuser.biases_[1:].mean()) < 4.0
    assert float(fuser.biases_[0]) == 0.0

    def miou(pred):
        return mean_iou(confusion_matrix(masks.numpy(), pred.numpy()), "competition")

    before = miou(fusion.ArgmaxFuser().fit(shifted, masks).predict(shifted))
    after = miou(fuser.predict(shifted))
    assert after > before + 0.1
    info = fuser.fit_info_
    assert info["miou_after"] >= info["miou_before"] and info["fit_pixels"] <= 20_000
    # already well placed boundaries stay (nearly) where they are
    clean = clean_logits(masks, margin=4.0, noise=1.0, seed=8)
    assert float(fusion.BiasFuser(max_pixels=20_000).fit(clean, masks).biases_.abs().max()) < 0.75


def _every_pixel_offset_search(pixel_logits, label_codes, convention, span, steps, rounds):
    """The bias fuser's greedy search written plainly: every trial compares every pixel."""
    from ensemble.core.metrics import mean_iou

    def score(codes):
        value = mean_iou(np.bincount(codes, minlength=25).reshape(5, 5), convention)
        return value if np.isfinite(value) else -np.inf

    biases = np.zeros(5, dtype=np.float32)
    first = best = score(label_codes + pixel_logits.argmax(axis=1))
    for step in range(rounds):
        for k in (1, 2, 3, 4):
            others = pixel_logits + biases
            others[:, k] = -np.inf
            alt = others.argmax(axis=1)
            alt_logits = np.take_along_axis(others, alt[:, None], axis=1)[:, 0]
            for delta in np.linspace(-span, span, steps, dtype=np.float32) * np.float32(0.5**step):
                trial = biases.copy()
                trial[k] += delta
                shifted = pixel_logits[:, k] + trial[k]
                wins = (shifted > alt_logits) | ((shifted == alt_logits) & (k < alt))
                value = score(np.where(wins, label_codes + k, label_codes + alt))
                if value > best + 1e-9:
                    best, biases = value, trial
    return biases, first, best


@pytest.mark.parametrize("seed, convention, quantum", [(0, "competition", 0.0), (1, "competition", 0.25),
                                                       (2, "allpixels", 0.5), (3, "competition", 1.0)])
def test_offset_search_equals_comparing_every_pixel_in_every_trial(seed, convention, quantum):
    """Offsets and scores bit for bit those of the plain search, ties included (logits on a grid of ``quantum``)."""
    from fusion.bias import search_offsets

    rng = np.random.default_rng(seed)
    labels = rng.choice(5, size=30_000, p=[0.3, 0.3, 0.2, 0.15, 0.05])
    pixel_logits = (rng.normal(size=(30_000, 5)) * 2 + 3 * np.eye(5)[labels]).astype(np.float32)
    pixel_logits[:, 3] -= 1.5  # a misplaced boundary, so that moves are taken
    if quantum:
        pixel_logits = (np.round(pixel_logits / quantum) * quantum).astype(np.float32)
    if convention == "competition":
        pixel_logits[:, 0] = -np.inf
    codes = labels.astype(np.int64) * 5
    for span, steps, rounds in ((2.0, 21, 3), (0.5, 5, 2)):
        expected = _every_pixel_offset_search(pixel_logits, codes, convention, span, steps, rounds)
        found = search_offsets(pixel_logits, codes, convention=convention, span=span, steps=steps, rounds=rounds)
        assert found[0].tobytes() == expected[0].tobytes() and found[1:] == expected[1:]
    assert np.abs(expected[0]).max() > 0  # the search moved


def test_learned_is_deterministic_for_a_seed(data):
    logits, masks, _ = data
    first = fusion.get_fuser("learned3x3", **FAST["learned3x3"]).fit(logits, masks)
    second = fusion.get_fuser("learned3x3", **FAST["learned3x3"]).fit(logits, masks)
    assert torch.equal(first.weight_, second.weight_) and torch.equal(first.bias_, second.bias_)
    assert first.weight_.shape == (5, 5, 3, 3)


def test_windows_match_the_convolution_at_borders():
    logits = torch.randn(3, 5, 6, 7)
    masks = torch.zeros(3, 6, 7, dtype=torch.int64)
    windows, _ = sample_windows(logits, masks, np.arange(3), 10_000, np.random.default_rng(0), kernel_size=3)
    weight, bias = torch.randn(5, 5, 3, 3), torch.randn(5)
    conv = F.conv2d(logits, weight, bias, padding=1).permute(0, 2, 3, 1).reshape(-1, 5)
    assert torch.allclose(windows.reshape(len(windows), -1) @ weight.reshape(5, -1).T + bias, conv, atol=1e-5)


@pytest.mark.parametrize("name", MEMBER_LEVEL)
def test_save_load_reproduces_probabilities(fitted, data, name, tmp_path):
    fuser = fitted[name]
    path = fuser.save(tmp_path / f"{name}.pt")
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.pt"]  # no temp file left behind
    loaded = fusion.load_fuser(path)
    assert type(loaded) is type(fuser) and loaded.get_params() == fuser.get_params()
    assert torch.equal(loaded.predict_proba(data[0]), fuser.predict_proba(data[0]))
    assert loaded.fitted_tile_ids_ == data[2] and loaded.describe() == fuser.describe()


@pytest.mark.parametrize("name", MEMBER_LEVEL)
def test_module_matches_predict_logits(fitted, data, name):
    fuser = fitted[name]
    module = fuser.module()
    assert isinstance(module, torch.nn.Module)
    with torch.no_grad():
        assert torch.equal(module(data[0]), fuser.predict_logits(data[0]))
    if name.startswith("learned"):
        weight = fuser.weight_.reshape(5, 5, fuser.kernel_size, fuser.kernel_size)
        expected = F.conv2d(data[0], weight, fuser.bias_, padding=fuser.kernel_size // 2)
        expected[:, 0] = float("-inf")  # competition objective: class 0 blocked
        assert torch.allclose(fuser.predict_logits(data[0]), expected, atol=1e-5)  # 1x1: a matmul, not conv2d


@pytest.mark.parametrize("name", ["learned", "learned3x3"])
def test_learned_module_exports(fitted, data, name):
    batch = torch.export.Dim("batch", min=1)
    exported = torch.export.export(fitted[name].module(), (data[0][:2],), dynamic_shapes=({0: batch},))
    assert torch.equal(exported.module()(data[0][:3]), fitted[name].predict_logits(data[0][:3]))


@pytest.mark.parametrize("channels_last", [False, True])
def test_fusion_conv_1x1_runs_as_a_matrix_product_equal_to_the_convolution(channels_last):
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(5, 5, 1, 1, generator=generator), torch.randn(5, generator=generator)
    member_logits = torch.randn(3, 5, 16, 24, generator=generator)
    expected = F.conv2d(member_logits, weight, bias)
    if channels_last:
        member_logits = member_logits.contiguous(memory_format=torch.channels_last)
    fused = FusionConv(weight, bias)(member_logits)
    assert fused.shape == expected.shape and fused.is_contiguous()
    assert torch.allclose(fused, expected, atol=1e-5)


def corrupt(path, how):
    """Damage a saved fuser file at ``path`` in one of several ways."""
    if how == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(500))
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif how == "wrong format":
        torch.save({"format": "something-else"}, path)
    elif how == "missing":
        path.unlink()


@pytest.mark.parametrize("how", ["random bytes", "truncated", "wrong format", "missing"])
def test_bad_fuser_file_raises_run_error(fitted, tmp_path, how):
    path = fitted["calibrated"].save(tmp_path / "fuser.pt")
    corrupt(path, how)
    with pytest.raises(RunError) as caught:
        fusion.load_fuser(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError) as caught:
        fusion.get_fuser("median")
    for name in fusion.STRATEGIES:
        assert name in str(caught.value)


def test_predict_before_fit_raises():
    with pytest.raises(RuntimeError, match="not fitted"):
        fusion.get_fuser("calibrated").predict(torch.zeros(1, 5, 4, 4))


def test_fit_rejects_mismatched_inputs(data):
    logits, masks, ids = data
    fuser = fusion.get_fuser("argmax")
    with pytest.raises(ValueError, match="shape"):
        fuser.fit(logits[:, :4], masks)
    with pytest.raises(ValueError, match="shape"):
        fuser.fit(logits, masks[:, :8])
    with pytest.raises(ValueError, match="outside"):
        fuser.fit(logits, masks + 1)
    with pytest.raises(ValueError, match="tile ids"):
        fuser.fit(logits, masks, ids[:3])
