"""Install the Mars terrain per-class ensemble segmenter and its ``ensemble`` command."""
import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
#: What of a shipped run is installed (what git tracks of it): no resume state, snapshots, cache or lock.
SKIPPED = {"cache", "snapshots", "logs", "tensorboard"}
SKIPPED_FILES = {"latest.pt", ".manifest.lock", ".training.lock", "differences.png", "progress.png"}


def shipped_files():
    """The shipped runs' files under ``models/``, installed as the package data ``ensemble/shipped/``."""
    models = ROOT / "models"
    return sorted(str(p.relative_to(models)) for p in models.rglob("*")
                  if p.is_file() and not SKIPPED & set(p.relative_to(models).parts) and p.name not in SKIPPED_FILES)


VERSION = re.search(r'__version__ = "([^"]+)"',
                    Path(__file__).with_name("ensemble").joinpath("__init__.py").read_text()).group(1)

setup(
    name="mars-ensemble",
    version=VERSION,
    description="Per-class ensemble of compact one-vs-rest U-Nets for Mars terrain segmentation",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # the code; the shipped runs' weights and reports follow the data's terms (models/reference/MODEL_CARD.md)
    license="MIT",
    packages=find_packages(include=["ensemble", "ensemble.*", "members", "members.*", "fusion", "fusion.*"])
    + ["ensemble.shipped"],
    # the shipped runs (models/ in the checkout) install as ensemble/shipped/, found by ensemble.core.locations
    package_dir={"ensemble.shipped": "models"},
    package_data={"ensemble.shipped": shipped_files()},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.23",
        "joblib>=1.2",
        "click>=8.1",
        # the default inference engine on the CPU (README, Dependencies): onnxruntime runs the graphs,
        # onnx + onnxscript are what torch.onnx.export needs to write them
        "onnxruntime>=1.17",
        "onnx>=1.16",
        "onnxscript>=0.2",
        # the budget curve's figure (ensemble evaluate --curve), drawn headless with the Agg backend
        "matplotlib>=3.7",
        # reading PNG, JPEG and TIFF images for predict --images and writing every PNG; torchvision pulls it too
        "Pillow>=9.0",
        # progress bars on a terminal (training batches, predict, evaluate steps); pure Python, no dependencies
        "tqdm>=4.60",
    ],
    extras_require={
        # keras: the competition metric is cross-checked against keras.metrics.MeanIoU;
        # pytest-xdist: the tests run single-threaded, so scripts/test.sh runs one worker per core;
        # ruff and mypy: scripts/test.sh lints the tree (ruff.toml) and type-checks the public surface (mypy.ini)
        # before the tests
        "test": ["pytest>=7", "keras>=3", "pytest-xdist>=3", "ruff>=0.5", "mypy>=1.8"],
        "distributed": ["dask[distributed]>=2023.1"],
        # --tensorboard: torch.utils.tensorboard writes the event files; TensorBoard itself shows them
        "tensorboard": ["tensorboard>=2.10"],
    },
    entry_points={"console_scripts": ["ensemble=ensemble.cli:main"]},
)
