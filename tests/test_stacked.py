"""Stacked members (one grouped network) and the exported ensemble program."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import fusion
from ensemble.inference.export import EnsemblePipeline, export_pipeline, load_exported
from members.stacked import StackedUNet
from members.unet import UNet

K = 5


def _members(seed=0, **config):
    """Five random width-4 members with non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    models = [UNet(width=4, **config) for _ in range(K)]
    for i, model in enumerate(models):
        with torch.no_grad():
            for _ in range(i + 1):  # different statistics and batch counts per member
                model.train()(torch.rand(2, 1, 64, 128) * (i + 1))
        model.eval()
    return models


def _member_logits(models, x):
    with torch.no_grad():
        return torch.cat([m(x) for m in models], dim=1)


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("bottleneck", ["dilated_se", "double_conv"])
@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_stacked_equals_members_one_by_one(depth, bottleneck, upsample):
    models = _members(depth=depth, bottleneck=bottleneck, upsample=upsample, dropout=0.1)
    stacked = StackedUNet.from_members(models)
    assert not stacked.training
    for size in [(64, 128), (128, 256)]:
        x = torch.rand(2, 1, *size)
        with torch.no_grad():
            out = stacked(x)
            folded = stacked.for_inference()(x)
        assert out.shape == (2, K, *size)
        torch.testing.assert_close(out, _member_logits(models, x), rtol=0, atol=1e-5)
        torch.testing.assert_close(folded, out, rtol=0, atol=1e-5)
        assert folded.is_contiguous()


def test_split_round_trip_is_exact_and_leaves_the_rng_alone():
    models = _members(depth=2, bottleneck="dilated_se", upsample="bilinear")
    rng = torch.get_rng_state()
    stacked = StackedUNet.from_members(models)
    back = stacked.split()
    assert torch.equal(rng, torch.get_rng_state())
    assert stacked.down[0][0][1].num_batches_tracked.tolist() == [1, 2, 3, 4, 5]
    for original, copy in zip(models, back):
        assert copy.config == original.config and not copy.training
        a, b = original.state_dict(), copy.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        assert all(p.requires_grad for p in copy.parameters())
    # the copies own their memory: training one does not touch the stacked net
    with torch.no_grad():
        back[0].head.bias.add_(1)
    assert torch.equal(stacked.head.bias[:1], models[0].head.bias)


def test_members_with_different_configs_are_refused():
    models = [UNet(width=4), UNet(width=4), UNet(width=8, depth=2)]
    with pytest.raises(ValueError, match=r"differ in width: \[4, 4, 8\]; depth: \[3, 3, 2\]"):
        StackedUNet.from_members(models)


def _named_grads(module):
    return {name: p.grad for name, p in module.named_parameters()}


@pytest.mark.parametrize("bottleneck", ["dilated_se", "double_conv"])
def test_training_gradients_stay_within_each_member(bottleneck):
    models = _members(depth=2, bottleneck=bottleneck, upsample="transpose")
    stacked = StackedUNet.from_members(models).train()
    x = torch.rand(2, 1, 64, 128)
    target = (torch.rand(2, 64, 128) > 0.5).float()
    i = 2
    F.binary_cross_entropy_with_logits(stacked(x)[:, i], target).backward()
    member = models[i].train()
    F.binary_cross_entropy_with_logits(member(x)[:, 0], target).backward()
    member_grads = _named_grads(member)
    for name, grad in _named_grads(stacked).items():
        blocks = grad.chunk(K)
        for j, block in enumerate(blocks):
            if j != i:
                assert not block.any(), f"{name}: member {j} got a gradient from member {i}'s loss"
        expected = member_grads[name]
        torch.testing.assert_close(blocks[i].reshape(expected.shape), expected, rtol=0, atol=1e-5)


_RUN_PROGRAM = """
import sys, torch
program = torch.export.load(sys.argv[1]).module()
outputs = {}
with torch.no_grad():
    for n, x in torch.load(sys.argv[2]).items():
        outputs[n] = program(x)
torch.save(outputs, sys.argv[3])
assert 'members' not in sys.modules and 'fusion' not in sys.modules and 'ensemble' not in sys.modules
"""


def test_exported_pipeline_runs_with_torch_alone(tmp_path):
    models = _members(depth=3, bottleneck="dilated_se", upsample="transpose")
    stacked = StackedUNet.from_members(models)
    torch.manual_seed(1)
    fuser = fusion.get_fuser("learned", max_epochs=2).fit(torch.randn(4, K, 32, 32), torch.randint(0, K, (4, 32, 32)))
    path = export_pipeline(stacked.train(), fuser, tmp_path / "ensemble.pt2")
    assert stacked.training  # exported from a copy
    inputs = {n: torch.rand(n, 1, 64, 128) for n in (3, 1)}  # batch sizes other than the example's 2
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", _RUN_PROGRAM, str(path), str(tmp_path / "inputs.pt"),
                    str(tmp_path / "outputs.pt")], check=True, cwd=tmp_path, env=env, timeout=300)
    outputs = torch.load(tmp_path / "outputs.pt")
    for n, x in inputs.items():
        expected = fuser.predict_proba(_member_logits(models, x))
        assert outputs[n].shape == (n, K, 64, 128)
        torch.testing.assert_close(outputs[n], expected, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(load_exported(path)(inputs[3]), outputs[3], rtol=0, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ensemble.pt2", "inputs.pt", "outputs.pt"]


def test_pipeline_checks_its_parts(tmp_path):
    stacked = StackedUNet.from_members(_members(depth=2)[:3])
    with pytest.raises(ValueError, match="emit 3 logit channels; the fuser needs 5"):
        EnsemblePipeline(stacked, torch.nn.Identity())
    with pytest.raises(ValueError, match="must end in .pt2"):
        export_pipeline(stacked, torch.nn.Identity(), tmp_path / "ensemble.pt")
