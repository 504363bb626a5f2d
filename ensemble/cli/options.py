"""Every option of the ``ensemble`` command, each declared once here, and the groups several verbs share.

An option whose words differ between verbs (``--out`` is a CSV for ``predict``, a folder for ``evaluate``) is one
function taking the verb's help text; everything else about it (name, destination, type) is said once.
``tests/test_cli.py`` fails when a flag is declared twice.
"""
import click

from ..core.defaults import BACKENDS, BATCH_SIZE, CROSS_FIT_FOLDS, DEFAULT_BACKEND, DEFAULT_STEP, MAX_PIXELS
from ..core.objectives import OBJECTIVES
from ..core.outliers import MIN_REPEATS, UNIFORM_SHARE
from ..core.split import VAL_FRACTION

#: The fusion strategies (``fusion.STRATEGIES``, spelled out so the CLI starts without importing torch;
#: tests/test_cli.py checks they agree).
STRATEGY_NAMES = ("argmax", "bias", "calibrated", "learned", "learned3x3", "baseline_bias", "hybrid", "stacked",
                  "baseline_pair", "baseline_pair_bias", "student_bias", "vote")


def compose(*options):
    """One decorator applying ``options`` in the order listed (the first is shown first in ``--help``)."""

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


# --- where: data and run -------------------------------------------------------------------------------------

data_option = click.option(
    "--data", "data", type=click.Path(dir_okay=False), default=None,
    help="Kaggle-layout .npz [default: $MARS_DATA, else ../shared/data/ai4mars-64x128.npz beside the "
         "checkout or the working directory].")

#: The help of ``--run`` for a verb that writes a run, one that needs a trained run, and one that reads any run.
RUN_WRITTEN = "Run folder, created if missing; an existing one is continued [default: runs/default, said]."
RUN_TRAINED = ("Run folder, or 'reference' for the shipped run [default: runs/default, or the shipped reference "
               "run while runs/default holds no run; said].")
RUN_READ = "Run folder [default: runs/default]."


def run_option(help=RUN_WRITTEN):
    """``--run RUN``: the run folder, by the one rule of :mod:`ensemble.core.locations`."""
    return click.option("--run", "run", type=click.Path(), default=None, help=help)


def out_option(help, *, required=False):
    """``--out PATH``: what the verb writes (its help says what it is)."""
    return click.option("--out", type=click.Path(), default=None, required=required, help=help)


def json_option(help):
    """``--json``: the result as JSON on stdout."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def masks_option(help, *, dest="masks_dir", required=False, metavar=None):
    """``--masks``: class-id masks, written (``predict``) or read as the truth (``score``)."""
    return click.option("--masks", dest, type=click.Path(), default=None, required=required, metavar=metavar,
                        help=help)


def strategy_option(help, *, choices=None, default=None):
    """``--strategy S``: a fusion strategy (or served model) of the run."""
    return click.option("--strategy", type=click.Choice(choices) if choices else None, default=default,
                        show_default=default is not None, help=help)


# --- how: common settings ------------------------------------------------------------------------------------

def seed_option(*, training=False):
    """``--seed S``: the random seed (a training verb's defaults to its recipe file's, else 0)."""
    help = "Random seed of the run [default: --config's settings.seed, else 0]." if training else "Random seed."
    return click.option("--seed", type=click.IntRange(min=0), default=None if training else 0,
                        show_default=not training, help=help)


quiet_option = click.option("--quiet", is_flag=True, help="Print no progress, only results and errors.")
device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where the networks run (auto: a CUDA GPU when present, else the CPU).")
engine_option = click.option(
    "--engine", type=click.Choice(["auto", "torch", "onnxruntime"]), default="auto", show_default=True,
    help="What runs the networks: auto = onnxruntime on the CPU when installed (faster), else PyTorch.")
stack_option = click.option(
    "--stack/--no-stack", "stack", default=None,
    help="Run the members stacked as one grouped network, or one by one (same logits within 1e-5) [default: "
         "stacked on a GPU, one by one on the CPU, where the whole predict command measured faster so with either "
         "engine].")
outlier_options = compose(
    click.option("--min-repeats", type=click.IntRange(min=2), default=MIN_REPEATS, show_default=True,
                 help="A mask shared by at least this many tiles is suspect."),
    click.option("--uniform-share", type=click.FloatRange(0.0, 1.0), default=UNIFORM_SHARE, show_default=True,
                 help="A repeated mask whose top class covers this share of labeled pixels is kept."),
)


def tta_option(*, served=False):
    """``--tta none|flip``; ``served``: defaulting to what the run's evaluation recorded for the strategy."""
    help = "Test-time augmentation: average with the horizontal mirror"
    if served:
        help += (" [default: flip where ensemble evaluate --tta-gain found it helps the strategy, else none; said on "
                 "stderr]")
    return click.option("--tta", type=click.Choice(["none", "flip"]), default=None if served else "none",
                        show_default=not served, help=help + ".")


def step_option(help):
    """``--step F``: the sliding-window step as a fraction of the tile."""
    return click.option("--step", type=float, default=DEFAULT_STEP, show_default=True, help=help)


# --- training ------------------------------------------------------------------------------------------------

preset_option = click.option(
    "--preset", type=click.Choice(["quick", "full"]), default="quick", show_default=True,
    help="quick: minutes, shows the pipeline; full: the best-quality recipe (< 2 h on 2 cores).")
epochs_option = click.option("--epochs", type=click.IntRange(min=1), default=None,
                             help="Override the preset's epochs.")
samples_option = click.option("--samples-per-epoch", type=click.IntRange(min=0), default=None,
                              help="Tiles drawn per epoch (0: every training tile) [default: the preset's].")
width_option = click.option(
    "--width", type=click.IntRange(min=1), default=None,
    help="Channels of the first level (members; for baseline: its own width, default matched to the members' "
         "parameter count).")
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="[SCOPE:]KEY=VALUE",
    help="Override a training setting of the recipe, repeatable: KEY a training-config field "
         "(lr, schedule, warmup_epochs, min_lr_ratio, ema_decay, weight_decay, batch_size, patience, "
         "sampler_weight, model.dropout, augment.rotate_degrees, ...), VALUE JSON or a word; SCOPE "
         "(members, baseline or a class name) limits it to those networks. Recorded in the run's config.json.")
objective_option = click.option(
    "--objective", type=click.Choice(OBJECTIVES), default=None,
    help="What the run is trained for, fixed when it is created [default: the run's, else competition]. "
         "competition: the AN2DL metric (unlabeled pixels ignored in losses, fusion and scores; class 0 never "
         "predicted); fullmask: a full 5-class mask scored on every pixel.")
val_fraction_option = click.option(
    "--val-fraction", type=click.FloatRange(0.01, 0.9), default=None,
    help=f"Share of tiles (whole rover stops) held out for validation [default: --config's settings.val_fraction, "
         f"else {VAL_FRACTION}].")
config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None, metavar="FILE",
    help="Recipe file, .toml or .json, with the keys of --set and of a run's config.json: [settings] (seed, "
         "val_fraction, objective), training keys for every network (lr = 0.003, model.dropout = 0.1), a table "
         "per --set scope ([members], [baseline], [big_rock], ...), [networks.NAME] (a network's whole recorded "
         "config) and init_from. A run's own config.json reproduces that run. Precedence: preset < file < --set < "
         "options given here (--epochs, --width, --seed, ...). Recorded in the run's config.json like --set.")
init_from_option = click.option(
    "--init-from", "init_from", default=None, metavar="RUN",
    help="Start each network from the best.pt of the network with the same name in RUN (a run folder, or "
         "'reference' for the shipped run, read-only): the weights only, with a fresh optimiser, schedule and the "
         "epochs of this run. Every network must be in RUN with the same architecture, else nothing starts. A "
         "network already started resumes from its own latest.pt. Recorded (RUN and each best.pt's sha256) in "
         "config.json and manifest.json.")
loss_option = click.option("--loss", type=click.Choice(["bce_dice", "focal_dice", "ce", "focal"]), default=None,
                           help="Loss [members: bce_dice or focal_dice; baseline: ce or focal].")
tensorboard_option = click.option(
    "--tensorboard", is_flag=True,
    help="Also log every epoch (losses, scores, learning rate, the progress figure) to RUN/tensorboard/ for "
         "TensorBoard (needs the extra: pip install 'mars-ensemble[tensorboard]'). RUN/progress.png and each "
         "network's history.csv are written either way.")
backend_option = click.option(
    "--backend", type=click.Choice(BACKENDS), default=DEFAULT_BACKEND, show_default=True,
    help="How --jobs > 1 networks train at once: processes (workers forked from a process that has imported "
         "torch), loky or threading (joblib's), or dask (the cluster at --scheduler).")
scheduler_option = click.option(
    "--scheduler", default=None, metavar="ADDRESS",
    help="Dask scheduler address for --backend dask (workers must see --data and --run).")
stacked_option = click.option(
    "--stacked", is_flag=True,
    help="Train all members in one process as one grouped network (each keeps its own loss, "
         "sampler, learning rate and early stopping); fastest on a GPU.")
replicas_option = click.option(
    "--replicas", type=click.IntRange(min=1), default=1, show_default=True,
    help="Multiclass nets of the baseline's width to train, each with a seed of its own: 2 adds "
         "baseline_1, which ensemble evaluate soft-votes with the baseline (baseline_pair).")

#: The help of ``--jobs`` for the members, for other multiclass nets, and for a whole run.
JOBS_MEMBERS = ("Members trained at once; each gets cores // jobs torch threads [default: one per core, at most one "
                "per member; with more members than cores, enough that every round fills the cores (5 members on 2 "
                "cores: 3 at once, then 2); 1 with --stacked].")
JOBS_NETS = "Nets trained at once [default: as for train, counting only unfinished nets]."
JOBS_RUN = "Networks trained at once [default: as for train, over every network of the run not finished]."


def jobs_option(help):
    """``--jobs N``: networks trained at once."""
    return click.option("--jobs", type=click.IntRange(min=1), default=None, help=help)


def dispatch_options(jobs_help):
    """How several networks train at once: ``--jobs``, ``--backend``, ``--scheduler``."""
    return compose(jobs_option(jobs_help), backend_option, scheduler_option)


#: The recipe of a training verb (and of ``ensemble run``): what it trains and how, where, and what it says.
recipe_options = compose(preset_option, epochs_option, samples_option, width_option, device_option,
                         val_fraction_option, objective_option, set_option, config_option, init_from_option)
training_options = compose(recipe_options, loss_option, tensorboard_option, quiet_option, seed_option(training=True),
                           run_option(), data_option)

# --- evaluation ----------------------------------------------------------------------------------------------

cross_fit_option = click.option(
    "--cross-fit", "cross_fit", type=click.IntRange(min=0), default=CROSS_FIT_FOLDS, show_default=True,
    help="Score each strategy out of fold: refit its fuser this many times, each time without one "
         "fold of validation rover stops (0: score the saved fusers on the tiles they were fitted on).")
curve_option = click.option(
    "--curve", is_flag=True,
    help="Add the budget curve: every model scored at its snapshot epochs (the recipe's "
         "snapshot_fractions) against training time and tiles seen; budget_curve.png and a report table.")
ablation_option = click.option(
    "--ablation", is_flag=True,
    help="Also score the hybrid with each member left out in turn (which specialists it needs).")
tta_gain_option = click.option(
    "--tta-gain", "tta_gain", is_flag=True,
    help="Also score every served model with flip TTA and record where it helps (interval above 0): "
         "predict, export and the API then serve that model with the flip by default.")
#: What ``evaluate`` adds to the report, shared with ``ensemble run``.
evaluation_options = compose(cross_fit_option, curve_option, ablation_option, tta_gain_option)

# --- prediction ----------------------------------------------------------------------------------------------

batch_size_option = click.option(
    "--batch-size", type=click.IntRange(min=1), default=BATCH_SIZE, show_default=True,
    help="Tiles (windows) per batch (the default is the fastest on a CPU; try 64 or more on a GPU).")
max_pixels_option = click.option("--max-pixels", "max_pixels", type=int, default=MAX_PIXELS, show_default=True,
                                 help="Refuse images with more pixels than this, before any work.")
