"""Loss options users switch, each on a tiny hand-made batch with the expected value worked out here.

Member losses: BCE-with-logits (or binary focal) with a positive weight, plus ``dice_weight`` x soft
Dice; unlabeled pixels left out for terrain members under ``competition``. Baseline: class-weighted
cross-entropy (or focal), over classes 1-4 on labeled pixels under ``competition``. Sampling: the
big rock member draws tiles holding big rock ``SAMPLER_WEIGHTS["big_rock"]`` (4) times more often.
"""
import math

import numpy as np
import pytest
import torch

from ensemble.core.weights import class_weights
from ensemble.recipe import TrainOptions
from ensemble.train import network_config
from members.batches import build_loss, epoch_order, targets_and_valid
from members.config import TrainConfig
from members.losses import MemberLoss, MulticlassLoss, auto_pos_weight
from members.presets import SAMPLER_WEIGHTS

LN2 = math.log(2)


def softplus(x):
    """log(1 + e^x): BCE-with-logits of a negative pixel; softplus(-x) is that of a positive one."""
    return math.log1p(math.exp(x))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def logits(*values):
    """A (1, 1, 1, n) member logit map."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


def row(*values):
    """A (1, 1, n) mask or target."""
    return torch.tensor(values).reshape(1, 1, -1)


#: 20 pixels: class 0 x4, soil x4, bedrock x8, sand x3, big rock x1.
MASKS = np.array([0] * 4 + [1] * 4 + [2] * 8 + [3] * 3 + [4], dtype=np.uint8).reshape(1, 4, 5)


def test_positive_weight_scales_positive_pixels_only():
    x, t = logits(0.0, 2.0, -1.0, 3.0), row(1, 0, 1, 0)
    loss = MemberLoss("bce_dice", pos_weight=3.0, dice_weight=0.0)(x, t)
    # positives: 3 * softplus(-x); negatives: softplus(x)   (2.0794 + 2.1269 + 3.9398 + 3.0486) / 4
    expected = (3 * LN2 + softplus(2.0) + 3 * softplus(1.0) + softplus(3.0)) / 4
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(2.798685, abs=1e-6)
    assert float(MemberLoss("bce_dice", 1.0, 0.0)(x, t)) == pytest.approx(
        (LN2 + softplus(2.0) + softplus(1.0) + softplus(3.0)) / 4, rel=1e-6)


def test_soft_dice_term_and_its_weight():
    x, t = logits(0.0, 0.0, 0.0, 0.0), row(1, 1, 0, 0)
    # sigmoid(0) = 0.5 everywhere: intersection 1, sum p 2, sum t 2 -> Dice loss 1 - (2 + 1) / (2 + 2 + 1) = 0.4
    assert float(MemberLoss("bce_dice", 1.0, dice_weight=1.0)(x, t)) == pytest.approx(LN2 + 0.4, rel=1e-6)
    assert float(MemberLoss("bce_dice", 1.0, dice_weight=0.5)(x, t)) == pytest.approx(LN2 + 0.2, rel=1e-6)


def test_binary_focal_loss_downweights_easy_pixels():
    x, t = logits(0.0, 2.0, -3.0), row(1, 1, 0)
    # (1 - p_true)^gamma: 0.5^2 = 0.25 at x=0; (1 - sigmoid(2))^2 = 0.01421 at x=2; (1 - sigmoid(3))^2 at x=-3, t=0
    expected = (LN2 * 0.25 + softplus(-2.0) * (1 - sigmoid(2.0)) ** 2 + softplus(-3.0) * (1 - sigmoid(3.0)) ** 2) / 3
    focal = MemberLoss("focal_dice", pos_weight=1.0, dice_weight=0.0, gamma=2.0)
    assert float(focal(x, t)) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.058400, abs=1e-6)
    bce = MemberLoss("bce_dice", 1.0, 0.0)(x, t)
    assert float(MemberLoss("focal_dice", 1.0, 0.0, gamma=0.0)(x, t)) == pytest.approx(float(bce), rel=1e-6)
    # the positive weight multiplies focal positives too
    weighted = MemberLoss("focal_dice", pos_weight=2.0, dice_weight=0.0)(x, t)
    assert float(weighted) == pytest.approx(expected + (LN2 * 0.25 + softplus(-2.0) * (1 - sigmoid(2.0)) ** 2) / 3,
                                            rel=1e-6)


@pytest.mark.parametrize("objective", ["competition", "fullmask"])
def test_terrain_member_ignores_unlabeled_pixels_under_competition(objective):
    masks = row(0, 1, 2, 1)  # the first pixel is unlabeled
    config = TrainConfig(name="soil", target=1, objective=objective, pos_weight=2.0, dice_weight=0.0)
    loss_fn = build_loss(config, MASKS)
    target, valid = targets_and_valid(config, masks)
    assert target.tolist() == [[[0, 1, 0, 1]]]
    x = logits(4.0, 1.0, -1.0, 0.0)
    labeled = (2 * softplus(-1.0) + softplus(-1.0) + 2 * LN2) / 3  # pixels 2-4: soil, bedrock, soil
    if objective == "competition":
        assert valid.tolist() == [[[False, True, True, True]]]
        assert float(loss_fn(x, target, valid)) == pytest.approx(labeled, rel=1e-6)
        x[..., 0] = -7.0  # the unlabeled pixel has no say
        assert float(loss_fn(x, target, valid)) == pytest.approx(labeled, rel=1e-6)
    else:
        assert valid is None  # every pixel counts; the unlabeled one is a negative: softplus(4)
        assert float(loss_fn(x, target, valid)) == pytest.approx((3 * labeled + softplus(4.0)) / 4, rel=1e-6)


def test_background_member_learns_every_pixel_under_competition():
    config = TrainConfig(name="background", target=0, objective="competition", pos_weight=1.0, dice_weight=0.0)
    target, valid = targets_and_valid(config, row(0, 1, 2, 0))
    assert valid is None and target.tolist() == [[[1, 0, 0, 1]]]
    x = logits(1.0, 1.0, -2.0, 0.0)
    expected = (softplus(-1.0) + softplus(1.0) + softplus(-2.0) + LN2) / 4
    assert float(build_loss(config, MASKS)(x, target, valid)) == pytest.approx(expected, rel=1e-6)


def test_automatic_positive_weight_is_sqrt_of_negatives_over_positives():
    assert auto_pos_weight(0.2) == pytest.approx(2.0)  # sqrt(0.8 / 0.2)
    assert auto_pos_weight(0.5) == pytest.approx(1.0)
    assert auto_pos_weight(1e-4) == 20.0  # sqrt(9999) = 99.99, capped
    assert auto_pos_weight(0.0) == 20.0
    # MASKS: 20 pixels, 16 labeled; soil 4, big rock 1, class 0 4
    expected = {("soil", "competition"): math.sqrt(12 / 4), ("soil", "fullmask"): math.sqrt(16 / 4),
                ("big_rock", "competition"): math.sqrt(15 / 1), ("big_rock", "fullmask"): math.sqrt(19 / 1),
                ("background", "competition"): math.sqrt(16 / 4),  # it learns every pixel
                ("background", "fullmask"): math.sqrt(16 / 4)}
    for (name, objective), weight in expected.items():
        config = TrainConfig(name=name, target=["background", "soil", "bedrock", "sand", "big_rock"].index(name),
                             objective=objective)
        assert float(build_loss(config, MASKS).pos_weight) == pytest.approx(weight, rel=1e-6), (name, objective)
    fixed = TrainConfig(name="soil", target=1, pos_weight=7.5)  # an explicit weight wins
    assert float(build_loss(fixed, MASKS).pos_weight) == 7.5


def test_class_weights_are_normalised_inverse_square_roots():
    # competition: shares over the 16 labeled pixels 4/16, 8/16, 3/16, 1/16 -> 1/sqrt = 2, 1.414, 2.309, 4
    inv = [2.0, math.sqrt(2), math.sqrt(16 / 3), 4.0]
    baseline = TrainConfig(name="baseline", loss="ce", objective="competition")
    weights = build_loss(baseline, MASKS).class_weights
    assert weights[0] == 0
    np.testing.assert_allclose(weights[1:].numpy(), np.array(inv) / np.mean(inv), rtol=1e-6)
    assert float(weights[1:].mean()) == pytest.approx(1.0)
    # fullmask: shares over all 20 pixels, class 0 included
    inv = [1 / math.sqrt(s) for s in (4 / 20, 4 / 20, 8 / 20, 3 / 20, 1 / 20)]
    full = build_loss(TrainConfig(name="baseline", loss="ce", objective="fullmask"), MASKS).class_weights
    np.testing.assert_allclose(full.numpy(), np.array(inv) / np.mean(inv), rtol=1e-6)
    np.testing.assert_allclose(class_weights([5] * 4), [1.0] * 4)
    # the one function the learned fusers use too: absent and ignored classes get 0, the rest mean 1
    np.testing.assert_allclose(class_weights([9, 0, 4, 1, 0], ignore=(0,)).numpy(), [0, 0, 0.5 * 2 / 1.5, 2 / 1.5, 0],
                               rtol=1e-6)


def _class_logits():
    """Three pixels: truth 1 with flat terrain logits, truth 4 with big rock at ln 3, truth 0 (unlabeled)."""
    x = torch.zeros(1, 5, 1, 3, dtype=torch.float32)
    x[0, 0, 0, 0] = 5.0  # a strong class-0 logit on the soil pixel
    x[0, 4, 0, 1] = math.log(3.0)
    x[0, 2, 0, 2] = 9.0
    return x, row(1, 4, 0)


def test_weighted_cross_entropy_over_terrain_classes():
    x, target = _class_logits()
    weights = torch.tensor([0.0, 1.0, 1.0, 1.0, 3.0])
    loss = MulticlassLoss("ce", weights, terrain_only=True)
    # terrain softmax over classes 1-4: soil pixel p = 1/4 (class 0's logit 5 is dropped), big rock p = 3/6;
    # the unlabeled pixel is left out: (1 * ln 4 + 3 * ln 2) / (1 + 3) = 5/4 ln 2
    assert float(loss(x, target, target > 0)) == pytest.approx(5 / 4 * LN2, rel=1e-6)
    assert float(loss(x, target)) == pytest.approx(5 / 4 * LN2, rel=1e-6)  # terrain_only drops truth 0 itself
    # all five classes, every pixel (fullmask): soil p = 1/(e^5 + 4); big rock 3/(3 + 4); class 0 pixel p = 1/(e^9 + 4)
    weights = torch.tensor([2.0, 1.0, 1.0, 1.0, 3.0])
    full = MulticlassLoss("ce", weights, terrain_only=False)
    expected = (math.log(math.exp(5) + 4) + 3 * math.log(7 / 3) + 2 * math.log(math.exp(9) + 4)) / (1 + 3 + 2)
    assert float(full(x, target)) == pytest.approx(expected, rel=1e-6)


def test_multiclass_focal_loss():
    x, target = _class_logits()
    weights = torch.tensor([0.0, 1.0, 1.0, 1.0, 3.0])
    # (1 - p)^2: soil p = 1/4 -> 9/16; big rock p = 1/2 -> 1/4
    expected = (LN2 * 2 * 9 / 16 + 3 * LN2 * 1 / 4) / 4
    focal = MulticlassLoss("focal", weights, gamma=2.0, terrain_only=True)
    assert float(focal(x, target, target > 0)) == pytest.approx(expected, rel=1e-6)
    plain = MulticlassLoss("ce", weights, terrain_only=True)(x, target)
    assert float(MulticlassLoss("focal", weights, gamma=0.0, terrain_only=True)(x, target)) == pytest.approx(
        float(plain), rel=1e-6)


def test_loss_option_reaches_the_networks():
    settings = {"objective": "competition", "seed": 0}

    def config(name, loss=None):
        return network_config(name, settings=settings, width=4, options=TrainOptions(epochs=1, loss=loss))

    masks = np.tile(MASKS, (2, 1, 1))
    focal = build_loss(config("sand", loss="focal_dice"), masks)
    assert isinstance(focal, MemberLoss) and focal.kind == "focal_dice"
    assert build_loss(config("sand"), masks).kind == "bce_dice"
    baseline = build_loss(config("baseline", loss="focal"), masks)
    assert isinstance(baseline, MulticlassLoss) and baseline.kind == "focal" and baseline.terrain_only
    with pytest.raises(ValueError, match="valid: bce_dice, focal_dice"):
        MemberLoss("dice")


def test_big_rock_member_draws_big_rock_tiles_four_times_as_often():
    settings, options = {"objective": "competition", "seed": 0}, TrainOptions(epochs=1)
    configs = {name: network_config(name, settings=settings, width=4, options=options)
               for name in ("soil", "big_rock", "baseline")}
    assert SAMPLER_WEIGHTS == {"big_rock": 4.0}
    assert [configs[n].sampler_weight for n in ("soil", "big_rock", "baseline")] == [1.0, 4.0, 1.0]
    masks = np.ones((10, 2, 2), dtype=np.uint8)
    masks[[3, 7], 0, 0] = 4  # 2 of 10 tiles hold big rock
    # weight 4: each draw is a big rock tile with probability 2*4 / (2*4 + 8*1) = 1/2 (1/5 unweighted)
    order = epoch_order(TrainConfig(name="big_rock", target=4, sampler_weight=4.0, samples_per_epoch=4000), masks, 0)
    share = np.isin(order, [3, 7]).mean()
    assert share == pytest.approx(0.5, abs=0.03), share  # binomial sd 0.008
    # weight 1: a shuffle, every tile equally often
    plain = epoch_order(TrainConfig(name="soil", target=1, samples_per_epoch=40), masks, 0)
    assert np.array_equal(np.bincount(plain, minlength=10), [4] * 10)
    # the baseline with a sampler weight favours big rock tiles too
    base = epoch_order(TrainConfig(name="baseline", sampler_weight=4.0, samples_per_epoch=4000), masks, 0)
    assert np.isin(base, [3, 7]).mean() == pytest.approx(0.5, abs=0.03)
