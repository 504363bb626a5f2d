"""Data layer: loading, validation errors, grouped split, outliers, CLI."""
import numpy as np
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.core.data import load_data
from ensemble.core.outliers import find_outliers
from ensemble.core.split import LeakWarning, split_indices


def run_cli(*args):
    return CliRunner().invoke(main, list(args))


def test_shared_file_summary(data_path):
    result = run_cli("data", "inspect", "--data", str(data_path), "--json")
    assert result.exit_code == 0, result.output
    import json

    summary = json.loads(result.output)
    assert summary["training_tiles"] == 10350
    assert (summary["tile_height"], summary["tile_width"]) == (64, 128)
    assert summary["groups"] == 1034
    shares = [round(100 * c["pixel_share"], 1) for c in summary["classes"]]
    assert shares == [41.3, 22.1, 29.5, 6.6, 0.5]
    assert summary["outlier_tiles"] == 0  # legit whole-tile labels repeat but are kept


def test_inspect_text_output(data_path):
    result = run_cli("data", "inspect", "--data", str(data_path))
    assert result.exit_code == 0
    assert "10350 of 64x128" in result.output and "big_rock" in result.output


def test_images_normalised(mars):
    assert mars.images.dtype == np.float32 and 0.0 <= mars.images.min() and mars.images.max() <= 1.0
    assert mars.masks.dtype == np.uint8 and mars.masks.max() == 4


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_images_detected(write_npz, scale):
    rng = np.random.default_rng(0)
    img = rng.random((3, 8, 16)).astype(np.float32) * scale
    mask = rng.integers(0, 5, (3, 8, 16)).astype(np.float32)
    data = load_data(write_npz(training_set=np.stack([img, mask], axis=1)))
    np.testing.assert_allclose(data.images, img / scale, rtol=1e-6)


def _tiles(n=4, h=8, w=16):
    rng = np.random.default_rng(1)
    return np.stack([rng.integers(0, 256, (n, h, w)), rng.integers(0, 5, (n, h, w))], axis=1).astype(np.uint8)


def _expect_error(path, *fragments):
    result = run_cli("data", "inspect", "--data", str(path))
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert message.startswith("Error: ") and "\n" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.npz", "nope.npz", "not found")


def test_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip archive at all")
    _expect_error(path, "junk.npz", "not a readable .npz")


def test_truncated_npz(write_npz):
    path = write_npz(training_set=_tiles(50, 64, 128))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _expect_error(path, "not a readable .npz")


def test_missing_key_lists_keys(write_npz):
    _expect_error(write_npz(images=_tiles()[:, 0]), "missing key 'training_set'", "keys found: images")


def test_wrong_rank(write_npz):
    _expect_error(write_npz(training_set=_tiles()[:, 0]), "training_set", "expected (N, 2, H, W)")


def test_wrong_plane_count(write_npz):
    _expect_error(write_npz(training_set=np.concatenate([_tiles(), _tiles()[:, :1]], axis=1)), "3 planes")


def test_count_mismatch_groups(write_npz):
    _expect_error(write_npz(training_set=_tiles(4), training_groups=np.arange(3)), "training_groups", "(4,)")


def test_nan_pixels(write_npz):
    t = _tiles().astype(np.float32)
    t[2, 0, 3, 3] = np.nan
    _expect_error(write_npz(training_set=t), "NaN or inf", "tile 2")


def test_mask_out_of_range(write_npz):
    t = _tiles()
    t[1, 1, 0, :3] = 7
    t[3, 1, 0, 0] = 9
    _expect_error(write_npz(training_set=t), "4 mask values outside 0-4", "first in tile 1")


def test_empty_arrays(write_npz):
    _expect_error(write_npz(training_set=np.zeros((0, 2, 8, 16), np.uint8)), "empty")


def test_object_arrays_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, training_set=np.array([{"a": 1}], dtype=object))
    _expect_error(path, "pickle")


def test_test_set_size_mismatch(write_npz):
    _expect_error(write_npz(training_set=_tiles(), test_set=np.zeros((2, 4, 4), np.uint8)), "test_set", "4x4")


def test_group_split_disjoint_and_deterministic(mars):
    train, val = split_indices(len(mars), mars.groups, 0.15, seed=3)
    assert not set(mars.groups[train]) & set(mars.groups[val])
    assert len(train) + len(val) == len(mars)
    assert 0.14 < len(val) / len(mars) < 0.2
    again = split_indices(len(mars), mars.groups, 0.15, seed=3)
    assert np.array_equal(val, again[1])
    assert not np.array_equal(val, split_indices(len(mars), mars.groups, 0.15, seed=4)[1])


def test_tile_split_warns():
    with pytest.warns(LeakWarning, match="leak"):
        train, val = split_indices(100, None, 0.2, seed=0)
    assert len(val) == 20 and not set(train) & set(val)


def test_kaggle_file_without_groups_reads_and_warns(write_npz):
    path = write_npz("mars_for_students.npz", training_set=_tiles(20), test_set=_tiles(5)[:, 0])
    data = load_data(path)
    assert data.groups is None and data.test_images.shape == (5, 8, 16)


def test_outliers_on_injected_duplicates(tmp_path, raw_arrays):
    rng = np.random.default_rng(0)
    train = raw_arrays["training_set"][:600].copy()
    alien = rng.integers(0, 5, (64, 128)).astype(np.uint8)
    injected = np.sort(rng.choice(600, 110, replace=False))
    train[injected, 1] = alien
    train[7, 1] = 0  # an all-background mask
    found = find_outliers(train[:, 0].astype(np.float32), train[:, 1])
    assert np.array_equal(found.reasons["repeated_mask"], injected)
    assert list(found.reasons["all_background"]) == [7]

    path = tmp_path / "dirty.npz"
    groups = raw_arrays["training_groups"][:600]
    np.savez(path, training_set=train, training_groups=groups, training_ids=raw_arrays["training_ids"][:600])
    out = tmp_path / "clean.npz"
    result = run_cli("data", "clean", "--data", str(path), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "removed 111" in result.output
    with np.load(out) as cleaned:
        assert set(cleaned.files) == {"training_set", "training_groups", "training_ids"}
        keep = np.setdiff1d(np.arange(600), np.append(injected, 7))
        assert np.array_equal(cleaned["training_set"], train[keep])
        assert np.array_equal(cleaned["training_groups"], groups[keep])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_version_and_help():
    assert run_cli("--version").exit_code == 0
    result = run_cli("data", "clean", "--help")
    assert result.exit_code == 0 and "Example" in result.output
