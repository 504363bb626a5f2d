"""Train one network — a one-vs-rest member or the multiclass baseline — with resume and early stopping.

A network's folder holds ``latest.pt`` (written every epoch, with optimiser and
scheduler state), ``best.pt`` (the best validation epoch) and, once finished,
``metrics.json``. Each epoch draws its tile order and augmentation from a seed
derived from (seed, network, epoch), so a run resumed from ``latest.pt`` ends with
the same weights as one that was never interrupted.

Networks train in channels-last memory layout (:data:`MEMORY_FORMAT`), which oneDNN's CPU
convolutions run faster; checkpoints are saved in the standard contiguous layout either way.
"""
import json
import time
from pathlib import Path

import numpy as np
import torch

from ensemble.core.augment import AugmentConfig, build_augmentation
from ensemble.core.classes import CLASS_NAMES
from ensemble.core.devices import machine_cores
from ensemble.core.fileio import write_bytes_atomic, write_json_atomic
from ensemble.core.history import TrainingLock, write_history
from ensemble.core.logs import line_logger
from ensemble.core.progress import Progress
from ensemble.core.runfolder import BEST, LATEST, METRICS, snapshot_file
from ensemble.core.split import tiles_per_epoch

from .batches import build_loss, epoch_order, make_batch, make_distill_batch, targets_and_valid
from .checkpoint import load_checkpoint, save_checkpoint
from .losses import DistillTarget
from .optim import WeightAverage, build_scheduler, match_parameter_layout
from .unet import UNet, UNetConfig, count_parameters
from .validation import MEMORY_FORMAT, validation_ious, validation_logits, validation_loss, validation_score
from .warmstart import initial_weights

_log_line = line_logger(__name__)  # where progress lines go when the caller gives no log


def format_seconds(seconds):
    """``1h02m`` or ``3m07s``."""
    seconds = int(round(seconds))
    return (f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600
            else f"{seconds // 60}m{seconds % 60:02d}s")


def finished_metrics(out_dir):
    """The metrics of a network already finished in ``out_dir`` (marked ``skipped``), else ``None``."""
    metrics_path = Path(out_dir) / METRICS
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("finished"):
            metrics["skipped"] = True
            return metrics
    return None


class NetworkTrainer:
    """The training state of one network: model, loss, optimiser, scheduler, history and checkpoints.

    Built fresh, or resumed from ``out_dir/latest.pt``. The epoch loop lives outside
    (:func:`train_network` for one plain U-Net, :func:`members.stacked_training.train_stacked`
    for several members as one grouped network), so each network keeps its own loss,
    sampler, learning rate and early stopping however it is executed.
    """

    def __init__(self, config, split, out_dir, *, device="cpu", log=None, data_sha256=None, on_epoch=None):
        self.config = config
        self.on_epoch = on_epoch
        self.out_dir = Path(out_dir)
        self.lock = TrainingLock(self.out_dir)  # held while this process trains the network
        self.split = split
        self.device = torch.device(device)
        self.log = log or (lambda line: None)
        self.data_sha256 = data_sha256
        if config.distill and (split.train_teacher_logits is None
                               or len(split.train_teacher_logits) != len(split.train_images)):
            raise ValueError(f"{config.name}: distilled from {config.distill_settings()[0]!r} but given no teacher "
                             f"logits for its {len(split.train_images)} training tiles")
        self.val_positions = split.validation_subset(config)
        every = len(self.val_positions) == len(split.val_images)  # no copy when all tiles are scored
        self.val_images = split.val_images if every else split.val_images[self.val_positions]
        self.val_masks = split.val_masks if every else split.val_masks[self.val_positions]
        self.memory_format = MEMORY_FORMAT
        torch.manual_seed(config.network_seed())
        self.model = UNet(UNetConfig.from_dict(config.model)).to(self.device, memory_format=self.memory_format)
        latest = self.out_dir / LATEST
        if config.init_from and not latest.exists():  # a resumed network continues from its own weights
            self.model.load_state_dict(initial_weights(config))
            self.log(f"[{config.name}] starting from {config.init_from['run']}")
        self.loss_fn = build_loss(config, split.train_masks).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, config, config.steps_per_epoch(len(split.train_images)))
        self.step_schedule = config.schedule != "cosine_epoch"  # stepped every optimiser step, else every epoch
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay else None
        self.augment = build_augmentation(AugmentConfig(**config.augment)) if config.augment else None
        self.state = {"epoch": 0, "best_score": -1.0, "best_epoch": -1, "history": []}
        if latest.exists():
            ckpt = load_checkpoint(latest, map_location=self.device)
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            match_parameter_layout(self.optimizer)
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if self.average is not None:
                self.average.load_state_dict(ckpt["ema"])
            self.state = {k: ckpt[k] for k in self.state}
            self.log(f"[{config.name}] resuming from {latest} after epoch {self.state['epoch']}")
        write_history(self.out_dir, self.state["history"])  # the header alone says the network has started

    @property
    def eval_model(self):
        """The weights that are validated and kept as ``best.pt``: the moving average when ``ema_decay`` is on."""
        return self.average.module if self.average is not None else self.model

    @property
    def epoch(self):
        """Epochs completed so far."""
        return self.state["epoch"]

    def active(self):
        """True while epochs remain and early stopping has not triggered.

        Early stopping triggers after ``patience`` epochs in a row without improvement: with
        patience 4 and the best score at epoch 5, epochs 6-9 are trained and 9 is the last.
        The first epoch always runs; patience 0 never stops early.
        """
        if self.epoch >= self.config.epochs:
            return False
        if not self.config.patience:
            return True
        without_improvement = self.epoch - max(self.state["best_epoch"], 0)  # best_epoch is -1 before any
        return self.epoch == 0 or without_improvement < self.config.patience

    def epoch_batches(self):
        """Yield ``(images, target, valid)`` batches of the next epoch, on the device.

        Tile order and augmentation are drawn from this network's own random stream,
        seeded by (seed, network, epoch) and kept apart from the global one, so the
        batches are the same whether the network trains alone, resumed, or stacked with others.
        """
        epoch = self.epoch
        seed = self.config.network_seed() * 7919 + epoch
        torch.manual_seed(seed)  # dropout draws from the global stream
        generator = torch.Generator().manual_seed(seed)  # augmentation: this network's own stream
        order = epoch_order(self.config, self.split.train_masks, epoch)
        teacher = self.split.train_teacher_logits if self.config.distill else None
        for start in range(0, len(order), self.config.batch_size):
            positions = order[start : start + self.config.batch_size]
            if teacher is None:
                x, y = make_batch(self.split.train_images, self.split.train_masks, positions, self.augment,
                                  generator, self.device)
                target, valid = targets_and_valid(self.config, y)
            else:
                x, y, maps, coverage = make_distill_batch(self.split.train_images, self.split.train_masks, teacher,
                                                          positions, self.augment, generator=generator,
                                                          device=self.device)
                labels, valid = targets_and_valid(self.config, y)
                target = DistillTarget(labels, maps, coverage)
            yield x.contiguous(memory_format=self.memory_format), target, valid

    def step(self):
        """One optimiser step on the gradients already accumulated, then clear them.

        A per-step schedule and the weight average move along with it.
        """
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.step_schedule:
            self.scheduler.step()
        if self.average is not None:
            self.average.update(self.model)

    def end_epoch(self, val_logits, mean_loss, seconds, val_seconds=0.0):
        """Score ``val_logits``, step the schedule, save best/latest checkpoints and log one line.

        ``seconds`` is the whole epoch, of which ``val_seconds`` went to the validation forward pass
        (recorded in the history, shown as a share in the log line).
        """
        config = self.config
        if not self.step_schedule:
            self.scheduler.step()
        score = validation_score(config, val_logits, self.val_masks)
        epoch = self.epoch + 1
        self.state["epoch"] = epoch
        tiles = tiles_per_epoch(config.samples_per_epoch, len(self.split.train_images))
        row = {"epoch": epoch, "step": epoch * config.steps_per_epoch(len(self.split.train_images)),
               "lr": self.optimizer.param_groups[0]["lr"], "loss": mean_loss,
               "val_loss": validation_loss(config, self.loss_fn, val_logits, self.val_masks, device=self.device),
               "val_iou": score, "iou": validation_ious(config, val_logits, self.val_masks),
               "seconds": seconds, "val_seconds": val_seconds,
               "tiles_per_s": tiles / max(seconds - val_seconds, 1e-9),
               "threads": torch.get_num_threads(), "cores": machine_cores()}
        self.state["history"].append(row)
        improved = score > self.state["best_score"]
        common = dict(model_config=config.model, name=config.name, target=config.target,
                      train_config=config.to_dict(), data_sha256=self.data_sha256)
        if improved:
            self.state["best_score"], self.state["best_epoch"] = score, epoch
            save_checkpoint(self.out_dir / BEST, model=self.eval_model.state_dict(), epoch=epoch, val_iou=score,
                            **common)
        if epoch in config.snapshot_epochs():  # before latest.pt: a resumed run never misses one
            write_bytes_atomic(snapshot_file(self.out_dir, epoch), (self.out_dir / BEST).read_bytes())
        resume = {"ema": self.average.state_dict()} if self.average is not None else {}
        save_checkpoint(self.out_dir / LATEST, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                        scheduler=self.scheduler.state_dict(), **resume, **common, **self.state)
        mean_epoch = np.mean([h["seconds"] for h in self.state["history"]])
        eta = mean_epoch * (config.epochs - epoch)
        self.log(
            f"[{config.name}] epoch {epoch}/{config.epochs}  loss {mean_loss:.4f}  "
            f"val IoU {score:.4f}{' *' if improved else '  '}  {seconds:.1f}s "
            f"(validation {val_seconds / seconds:.0%})  "
            f"ETA {format_seconds(eta)}"
        )
        write_history(self.out_dir, self.state["history"])
        if self.on_epoch is not None:
            self.on_epoch(self.out_dir, row)

    def finish(self, **extra):
        """Write ``metrics.json`` (finished), release the training lock and return the metrics dict."""
        state, config = self.state, self.config
        metrics = {
            "name": config.name,
            "target": config.target,
            "class_name": CLASS_NAMES[config.target] if config.is_member else None,
            "finished": True,
            "best_epoch": state["best_epoch"],
            "best_val_iou": state["best_score"],
            "epochs_run": state["epoch"],
            "stopped_early": state["epoch"] < config.epochs,
            "parameters": count_parameters(self.model),
            "seconds": float(sum(h["seconds"] for h in state["history"])),
            "history": state["history"],
            "val_tiles": int(len(self.val_positions)),
            "config": config.to_dict(),
            **extra,
        }
        write_json_atomic(self.out_dir / METRICS, metrics)
        self.lock.release()
        return metrics


def train_network(config, split, out_dir, *, device="cpu", log=_log_line, data_sha256=None, on_epoch=None):
    """Train (or resume, or skip if finished) one network into ``out_dir``; return its metrics dict.

    ``split`` is a :class:`SplitArrays` (its training and validation tiles). ``log`` receives
    one line per epoch (pass ``None`` for silence). ``data_sha256`` is stored in the
    checkpoints so networks from different data files are never mixed. ``on_epoch(out_dir, row)`` is called after
    every epoch, once its checkpoints and ``history.csv`` are written (the run's progress figure, TensorBoard).
    """
    done = finished_metrics(out_dir)
    if done:
        return done
    trainer = NetworkTrainer(config, split, out_dir, device=device, log=log, data_sha256=data_sha256,
                             on_epoch=on_epoch)
    while trainer.active():
        started = time.perf_counter()
        trainer.model.train()
        total, count = 0.0, 0
        bar = Progress(config.steps_per_epoch(len(split.train_images)), log, unit="batches", every=None,
                       desc=f"[{config.name}] epoch {trainer.epoch + 1}/{config.epochs}")
        for step, (x, target, valid) in enumerate(trainer.epoch_batches(), 1):
            loss = trainer.loss_fn(trainer.model(x), target, valid)
            loss.backward()
            trainer.step()
            total += float(loss.detach()) * len(x)
            count += len(x)
            bar.update(step, loss=total / count, **{"tiles/s": count / (time.perf_counter() - started)})
        bar.close()
        val_started = time.perf_counter()
        val_logits = validation_logits(trainer.eval_model, trainer.val_images, trainer.device)
        ended = time.perf_counter()
        trainer.end_epoch(val_logits, total / count, ended - started, ended - val_started)
    return trainer.finish()
