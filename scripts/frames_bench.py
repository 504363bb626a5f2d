"""Whole frames, measured: the speed of large frames at ``--scale 8``, scale agreement, and MONAI's windows.

* ``speed``: 1024x1024 frames made by upsampling 128x128 frames (each an image's two tiles of the data
  file; the content does not change the work) 8x bilinearly, predicted with ``--scale 8``: the wall time of
  one frame through a loaded ``Predictor`` (start-up excluded; median of ``--repeats``), and of
  ``ensemble predict --images DIR --scale 8 --masks OUT`` on a folder of ``--frames`` of them in one
  process (loading included, said apart).
* ``scale``: validation frames (``:top`` + ``:bottom`` tiles) upsampled 2x (PIL's nearest, bilinear,
  bicubic and Lanczos filters) and predicted at ``--scale 2``, against the frames at scale 1 (each mask
  pixel repeated 2x2): the share of pixels that agree.
* ``monai``: this project's windows against MONAI's ``sliding_window_inference`` (``mode="gaussian"``,
  ``sigma_scale=1/8``, if ``monai`` is installed): bit-exactness on one tile and on two
  non-overlapping tiles, the windows' grid, and the time per 128x128 frame of the run's members.

Usage: python scripts/frames_bench.py --run models/reference [--strategy S] [--frames 100] [--repeats 5]
       [--parts speed,scale,monai] [--out frames.json]
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ensemble import api  # noqa: E402
from ensemble.api.serving import _served_strategy  # noqa: E402
from ensemble.core.data import load_data, tile_ids  # noqa: E402
from ensemble.evaluation.frames import frame_pairs  # noqa: E402
from ensemble.inference import Predictor  # noqa: E402
from ensemble.inference.windows import stitched_logits, window_starts  # noqa: E402


def _frames(images, ids, count):
    pairs = frame_pairs(ids)[:count]
    return np.concatenate([images[pairs[:, 0]], images[pairs[:, 1]]], axis=1), pairs


def _upsampled(frame_0_1, factor, method=Image.BILINEAR):
    image = Image.fromarray(np.round(frame_0_1 * 255).astype(np.uint8))
    return np.asarray(image.resize((image.width * factor, image.height * factor), method))


def speed(run, strategy, data, frames, repeats, log):
    small, _ = _frames(data.images, tile_ids(data), frames)  # any frames: the content does not change the work
    big = [_upsampled(f, 8) for f in small]
    predictor = Predictor(run, strategy, scale=8)
    predictor.predict(big[0])  # warm-up: sessions and caches
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        predictor.predict(big[i % len(big)])
        times.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "frames"
        folder.mkdir()
        for i, frame in enumerate(big):
            Image.fromarray(frame).save(folder / f"frame_{i:03d}.png")
        started = time.perf_counter()
        result = api.predict(run=run, strategy=strategy, images=str(folder), masks_dir=str(Path(tmp) / "masks"),
                             scale=8, quiet=True)
        folder_seconds = time.perf_counter() - started
    log(f"one 1024x1024 frame at --scale 8 ({strategy}): median {statistics.median(times):.3f} s over {repeats}; "
        f"{len(big)} frames in a folder: {folder_seconds:.1f} s (predict_run {result['seconds']:.1f} s)")
    return {"strategy": strategy, "one_frame_seconds": times, "one_frame_median": statistics.median(times),
            "folder_frames": len(big), "folder_seconds": folder_seconds, "predict_run_seconds": result["seconds"]}


#: PIL's upsampling filters the scale agreement is measured with.
UPSAMPLERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}


def scale_agreement(run, strategy, data, frames, log):
    manifest = json.loads((Path(run) / "manifest.json").read_text())
    val = np.asarray(manifest["split"]["val_indices"])
    small, _ = _frames(data.images[val], tile_ids(data)[val], frames)
    at_1 = Predictor(run, strategy).predict(list(small))
    at_2 = Predictor(run, strategy, scale=2)
    out = {"strategy": strategy, "frames": len(small)}
    for name, method in UPSAMPLERS.items():
        masks = at_2.predict([_upsampled(f, 2, method) for f in small])
        agree = [float((np.kron(a, np.ones((2, 2), dtype=np.uint8)) == b).mean()) for a, b in zip(at_1, masks)]
        out[name] = {"agree": float(np.mean(agree)), "worst": min(agree)}
        log(f"--scale 2 on {len(small)} validation frames upsampled 2x ({name}, {strategy}): "
            f"{100 * np.mean(agree):.2f} % of pixels agree with scale 1 (worst frame {100 * min(agree):.2f} %)")
    return out


def monai_comparison(run, log):
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        log("monai is not installed: pip install monai, then rerun --parts monai")
        return None
    members = Predictor(run, None)
    tile = members.tile_shape
    forward = members._forward
    rng = np.random.default_rng(0)
    frame = torch.from_numpy(rng.random((2 * tile[0], tile[1]), dtype=np.float32))

    def theirs(image, step):
        return sliding_window_inference(image[None, None], tile, 16, forward, overlap=1 - step, mode="gaussian",
                                        sigma_scale=0.125, padding_mode="replicate")[0]

    with torch.inference_mode():
        one = frame[: tile[0]]
        alone = forward(one[None, None])[0]
        two = torch.cat([forward(frame[None, None, : tile[0]])[0], forward(frame[None, None, tile[0]:])[0]], dim=1)
        ours_two = stitched_logits(forward, frame, tile, 1.0)[0]
        result = {"monai_one_tile_exact": bool(torch.equal(theirs(one, 0.5), alone)),
                  "monai_one_tile_max_diff": float((theirs(one, 0.5) - alone).abs().max()),
                  "ours_one_tile_exact": bool(torch.equal(stitched_logits(forward, one, tile)[0], alone)),
                  "monai_two_tiles_exact": bool(torch.equal(theirs(frame, 1.0), two)),
                  "ours_two_tiles_exact": bool(torch.equal(ours_two, two)),
                  "ours_grid_200_rows": window_starts(200, tile[0], 0.5)}
        timings = {}
        for name, call in (("monai", lambda: theirs(frame, 0.5)),
                           ("ours", lambda: stitched_logits(forward, frame, tile))):
            call()
            started = time.perf_counter()
            for _ in range(20):
                call()
            timings[name] = (time.perf_counter() - started) / 20
    result["seconds_per_128x128_frame"] = timings
    log(json.dumps(result))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="models/reference")
    parser.add_argument("--strategy", default=None)
    parser.add_argument("--data", default=None)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--parts", default="speed,scale,monai")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    data = load_data(args.data)
    strategy = args.strategy or _served_strategy(args.run, None)
    parts = set(args.parts.split(","))
    out = {"run": args.run, "threads": torch.get_num_threads()}
    if "speed" in parts:
        out["speed"] = speed(args.run, strategy, data, args.frames, args.repeats, print)
    if "scale" in parts:
        out["scale"] = scale_agreement(args.run, strategy, data, args.frames, print)
    if "monai" in parts:
        out["monai"] = monai_comparison(args.run, print)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
