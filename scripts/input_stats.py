"""Write a trained run's ``input_stats.json``: the image statistics of its training tiles and the check's thresholds.

Training writes the file when it plans a run (``ensemble/train.py: record_input_statistics``); this script
writes it for a run trained before that, such as the shipped ``models/reference`` and ``models/fullmask``,
from the training split its ``manifest.json`` records (``split.train_indices``) of the data it was trained
on (checked by sha256). The file is written atomically and its sha256 recorded in the manifest, so
``predict`` verifies it like a checkpoint. An existing file is rewritten (the statistics and the thresholds
of :data:`ensemble.core.imagestats.RULES` as they are now).

    python scripts/input_stats.py --run models/reference --data ../shared/data/ai4mars-64x128.npz
"""
import argparse
import sys

import numpy as np

from ensemble.core.data import load_data, resolve_data_path
from ensemble.core.errors import EnsembleError
from ensemble.core.imagestats import STATISTICS, training_statistics
from ensemble.core.runfolder import RunFolder


def write_input_stats(run, data_path=None):
    """Compute and write ``RUN/input_stats.json`` from the run's training split of ``data_path``; return its content."""
    folder = RunFolder(run)
    manifest = folder.manifest()
    data = load_data(resolve_data_path(data_path))
    if manifest["data"]["sha256"] != data.sha256:
        raise EnsembleError(f"--data {data.path}: sha256 {data.sha256[:12]}…, but {folder.manifest_path} was trained "
                            f"on {manifest['data']['file']} ({manifest['data']['sha256'][:12]}…)")
    train_idx = np.asarray(manifest["split"]["train_indices"], dtype=np.int64)
    content = training_statistics(data.images, data.tile_shape, train_idx)
    folder.write_input_stats(content)
    return content


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="the trained run folder")
    parser.add_argument("--data", default=None, help="the data file it was trained on [default: the shared file]")
    args = parser.parse_args()
    try:
        content = write_input_stats(args.run, args.data)
    except EnsembleError as exc:
        sys.exit(f"Error: {exc}")
    print(f"wrote {RunFolder(args.run).input_stats_path} ({content['tiles']} training tiles)")
    for name in STATISTICS:
        entry = content["statistics"][name]
        low, high = ("-" if v is None else f"{v:.3g}" for v in (entry["low"], entry["high"]))
        print(f"  {name:<10} median {entry['values'][3]:8.3f}  range {low} .. {high}")


if __name__ == "__main__":
    main()
