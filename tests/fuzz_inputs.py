"""Generators of malformed inputs for the fuzz tests: .npz archives and PNG folders."""
import io
import zipfile

import numpy as np


def _npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_with_header(shape, dtype="|u1", payload=b"\x00" * 64):
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + payload


def _zip_of(**members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


#: Kinds of damage :func:`malformed_npz_cases` cycles through.
NPZ_KINDS = 30


def malformed_npz_cases(rng, count, h=8, w=16):
    """Yield ``(label, bytes)`` of ``count`` malformed .npz files, each a different kind of damage.

    Tiles are ``h`` x ``w`` pixels: pass the size a run was trained on so that commands which
    check the tile size reach the damage itself rather than refusing the size.
    """
    def tiles(n=3, h=h, w=w, dtype=np.uint8):
        return np.stack([rng.integers(0, 256, (n, h, w)), rng.integers(0, 5, (n, h, w))], axis=1).astype(dtype)

    makers = [
        ("no training_set", lambda: _npz_bytes(images=tiles())),
        ("empty archive", lambda: _npz_bytes()),
        ("rank 3", lambda: _npz_bytes(training_set=tiles()[:, 0])),
        ("rank 5", lambda: _npz_bytes(training_set=tiles()[None])),
        ("3 planes", lambda: _npz_bytes(training_set=np.concatenate([tiles(), tiles()[:, :1]], 1))),
        ("zero tiles", lambda: _npz_bytes(training_set=np.zeros((0, 2, h, w), np.uint8))),
        ("zero width", lambda: _npz_bytes(training_set=np.zeros((3, 2, h, 0), np.uint8))),
        ("nan pixels", lambda: _npz_bytes(training_set=np.where(rng.random((3, 2, h, w)) < 0.05, np.nan,
                                                               tiles(dtype=np.float32)))),
        ("inf pixels", lambda: _npz_bytes(training_set=np.where(rng.random((3, 2, h, w)) < 0.05, np.inf,
                                                               tiles(dtype=np.float64)))),
        ("negative pixels", lambda: _npz_bytes(training_set=tiles(dtype=np.float32) - 300)),
        ("mask 5..9", lambda: _npz_bytes(training_set=np.concatenate(
            [tiles()[:, :1], rng.integers(5, 10, (3, 1, h, w)).astype(np.uint8)], 1))),
        ("negative mask", lambda: _npz_bytes(training_set=tiles(dtype=np.int16) * np.array([1, -1])[None, :, None, None]
                                             - np.array([0, 1])[None, :, None, None])),
        ("fractional mask", lambda: _npz_bytes(training_set=tiles(dtype=np.float32)
                                               + np.array([0, 0.5])[None, :, None, None])),
        ("bool tiles", lambda: _npz_bytes(training_set=tiles() > 2)),
        ("complex tiles", lambda: _npz_bytes(training_set=tiles().astype(np.complex64))),
        ("string tiles", lambda: _npz_bytes(training_set=tiles().astype(str))),
        ("object array", lambda: _npz_bytes(training_set=np.array([{"x": 1}, None], dtype=object))),
        ("groups too short", lambda: _npz_bytes(training_set=tiles(), training_groups=np.arange(2))),
        ("groups float", lambda: _npz_bytes(training_set=tiles(), training_groups=np.arange(3) + 0.5)),
        ("ids 2-d", lambda: _npz_bytes(training_set=tiles(), training_ids=np.array([["a"], ["b"], ["c"]]))),
        ("test_set rank 4", lambda: _npz_bytes(training_set=tiles(), test_set=tiles())),
        ("test_set other size", lambda: _npz_bytes(training_set=tiles(), test_set=np.zeros((2, 4, 4), np.uint8))),
        ("test_set nan", lambda: _npz_bytes(training_set=tiles(), test_set=np.full((2, h, w), np.nan))),
        ("truncated", lambda: _npz_bytes(training_set=tiles(20, 64, 128))[: int(rng.integers(10, 2000))]),
        ("random bytes", lambda: rng.integers(0, 256, int(rng.integers(1, 4000)), dtype=np.uint8).tobytes()),
        ("zip of text", lambda: _zip_of(**{"training_set.npy": b"not an array"})),
        ("huge header", lambda: _zip_of(**{"training_set.npy": _npy_with_header((10**12, 2, 64, 128))})),
        ("short payload", lambda: _zip_of(**{"training_set.npy": _npy_with_header((50, 2, 64, 128))})),
        ("plain npy", lambda: _npy_with_header((3, 2, h, w), payload=b"\x01" * (3 * 2 * h * w))),
        ("empty file", lambda: b""),
    ]
    assert len(makers) == NPZ_KINDS
    for i in range(count):
        label, make = makers[i % len(makers)]
        yield f"{i:03d}-{label}", make()


def write_png_folder_case(rng, folder, kind):
    """Fill ``folder`` with a malformed PNG image folder of ``kind``; return a label."""
    import torch
    from torchvision.io import encode_png

    folder.mkdir(parents=True, exist_ok=True)

    def png(h, w, channels=1):
        return encode_png(torch.from_numpy(rng.integers(0, 256, (channels, h, w), dtype=np.uint8))).numpy().tobytes()

    if kind == 0:
        return "empty folder"
    if kind == 1:
        (folder / "a.png").write_bytes(png(64, 128))
        (folder / "b.png").write_bytes(png(32, 64))
        return "mixed sizes"
    if kind == 2:
        (folder / "a.png").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
        return "not a png"
    if kind == 3:
        (folder / "a.png").write_bytes(png(64, 128)[:50])
        return "truncated png"
    if kind == 4:
        (folder / "a.png").write_bytes(png(60, 100))
        return "size not divisible"
    (folder / "notes.txt").write_text("hello")
    return "no png files"
