"""The inference, evaluation and training defaults the CLI, the API and the packages share, defined once here.

Torch-free, so the CLI can show them without loading torch (``ensemble --help`` stays fast).
"""

#: Tiles per inference batch (docs/performance.md measures batch sizes).
BATCH_SIZE = 16

#: Sliding windows' step, in tiles, for images other than the run's tiles (nnU-Net's 0.5).
DEFAULT_STEP = 0.5

#: The largest image ``predict`` takes, in pixels: a 4096x4096 frame.
MAX_PIXELS = 4096 * 4096

#: Cross-fitting folds of ``evaluate`` (validation rover stops dealt into folds).
CROSS_FIT_FOLDS = 5

#: How a command trains several networks at once on this machine (``--backend``): ``processes`` forks
#: workers from a server process that has imported torch (members.workers); ``loky`` and ``threading``
#: are joblib's; ``dask`` sends them to a cluster.
BACKENDS = ("processes", "loky", "threading", "dask")
DEFAULT_BACKEND = "processes"
