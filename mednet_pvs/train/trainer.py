"""Train one cross-validation fold: deep-supervised Dice + CE, AdamW, poly/cosine schedule, checkpoints.

Loss: MONAI's ``DiceCELoss`` (soft Dice without background, batch Dice, plus cross-entropy) wrapped
in ``DeepSupervisionLoss`` over MedNeXt's five outputs with nnU-Net's weights (1, 1/2, 1/4, 1/8 and 0
for the coarsest, normalised). Optimiser: AdamW (MedNet-PVS: lr 3e-4), gradient norm clipped at 12 and
the learning rate decayed per epoch (poly, exponent 0.9, as nnU-Net; or cosine). Mixed precision on
CUDA. Every epoch draws its patches from a generator seeded by (seed, fold, epoch), so a resumed run
continues exactly where an uninterrupted one would be. After each epoch: a fast validation (the
engine's Gaussian sliding window on the prepared validation cases, no mirroring, threshold 0.5), an
exponential moving average of it (nnU-Net's "pseudo Dice" EMA) for picking the best epoch, the latest
checkpoint, the best weights when the average improved, and the progress plot.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mednet_pvs.inference.sliding_window import predict_sliding_window
from mednet_pvs.metrics.voxel import voxel_counts
from mednet_pvs.models.networks import build_network, load_weights
from mednet_pvs.train.augment import Augmentation, PatchDataset, training_transforms
from mednet_pvs.train.checkpoint import Checkpoint, checkpoint_json, load_checkpoint, save_checkpoint
from mednet_pvs.train.config import TrainConfig
from mednet_pvs.train.curves import plot_history
from mednet_pvs.train.prepare import PreparedCase
from mednet_pvs.train.transfer import freeze_for_finetuning

__all__ = [
    "Budget",
    "FoldOutcome",
    "FoldSetup",
    "build_loss",
    "deep_supervision_weights",
    "derived_seed",
    "fast_validation_dice",
    "memory_format",
    "train_fold",
]

LOGGER = logging.getLogger(__name__)

EMA_MOMENTUM = 0.9  # nnU-Net's smoothing of the per-epoch validation Dice
STEP_SIZE = 0.5  # sliding-window overlap of the engine's default


def memory_format(device: torch.device) -> torch.memory_format:
    """channels-last on CPU, where oneDNN runs MedNeXt's training step 2-4x faster in it (measured by
    benchmarks/train_throughput.py); PyTorch's default layout elsewhere."""
    return torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format


def derived_seed(*parts: int) -> int:
    """A 31-bit seed derived from integers (run seed, fold, epoch, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint32)[0] >> 1)


def deep_supervision_weights(levels: int) -> list[float]:
    """nnU-Net's weights: 1/2^i per level, 0 for the coarsest when there are several, summing to 1."""
    weights = np.array([0.5**i for i in range(levels)])
    if levels > 1:
        weights[-1] = 0.0
    return (weights / weights.sum()).tolist()


def build_loss(levels: int) -> DeepSupervisionLoss:
    """Dice + cross-entropy on every deep-supervision output (targets down-sampled by MONAI, nearest)."""
    dice_ce = DiceCELoss(
        include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5
    )
    return DeepSupervisionLoss(dice_ce, weights=deep_supervision_weights(levels))


@dataclass
class Budget:
    """When this invocation must stop: a wall-clock deadline and/or a number of epochs."""

    deadline: float | None = None  # time.monotonic() value
    max_epochs: int | None = None
    epochs_run: int = 0

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def allows_epoch(self, expected_seconds: float) -> bool:
        """Whether another epoch fits (epoch count, and the time of an average epoch so far)."""
        if self.max_epochs is not None and self.epochs_run >= self.max_epochs:
            return False
        return self.deadline is None or time.monotonic() + expected_seconds <= self.deadline


@dataclass
class FoldSetup:
    """One fold's inputs: network, starting weights and prepared cases."""

    fold: int
    architecture: dict[str, Any]
    train_cases: list[PreparedCase]
    val_cases: list[PreparedCase]
    folder: Path
    initial_state: dict[str, torch.Tensor] | None = None
    trainable_decoder_layers: int | None = None


@dataclass
class FoldOutcome:
    """Where a fold stands after this invocation."""

    fold: int
    epochs_completed: int
    finished: bool
    history: dict[str, list[Any]] = field(default_factory=dict)
    best_epoch: int | None = None


def _empty_history() -> dict[str, list[Any]]:
    return {key: [] for key in ("epoch", "train_loss", "val_dice", "val_dice_ema", "lr", "seconds")}


def fast_validation_dice(
    net: nn.Module, cases: Sequence[PreparedCase], patch_size: Sequence[int], device: torch.device, amp: bool
) -> float:
    """Mean Dice at threshold 0.5 of the engine's sliding window (no mirroring) on prepared cases.

    The engine sets the network's memory layout for inference; the training layout is restored after.
    """
    net.eval()
    scores = []
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        for case in cases:
            probabilities = predict_sliding_window(
                np.asarray(case.image), [net], 2, patch_size, STEP_SIZE, (), device
            )[0]
            scores.append(voxel_counts(probabilities[0] < 0.5, np.asarray(case.label[0]) > 0).dice)
    net.to(device, memory_format=memory_format(device))
    return float(np.mean(scores))


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=config.epochs, power=0.9)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # loader workers must not compete with the network's threads


def _epoch_loader(
    setup: FoldSetup, config: TrainConfig, transforms: Any, epoch: int, device: torch.device
) -> DataLoader:
    rng = np.random.default_rng([config.seed, setup.fold, epoch])
    n_samples = config.iterations_per_epoch * config.batch_size
    draws = np.stack(
        [rng.integers(0, len(setup.train_cases), n_samples), rng.integers(0, 2**31 - 1, n_samples)], axis=1
    )
    return DataLoader(
        PatchDataset(setup.train_cases, transforms, draws),
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if config.workers else None,
    )


def _outputs(prediction: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
    return list(prediction) if isinstance(prediction, (list, tuple)) else prediction


def train_fold(setup: FoldSetup, config: TrainConfig, device: torch.device, budget: Budget) -> FoldOutcome:
    """Train (or continue) one fold up to ``config.epochs`` or until ``budget`` runs out."""
    folder = Path(setup.folder)
    torch.manual_seed(derived_seed(config.seed, setup.fold))
    net = build_network(setup.architecture)
    if setup.initial_state is not None:
        load_weights(net, setup.initial_state, "initial weights")
    layout = memory_format(device)
    net.to(device, memory_format=layout)
    if setup.trainable_decoder_layers is not None:
        params = freeze_for_finetuning(net, setup.trainable_decoder_layers)
    else:
        params = list(net.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = _scheduler(optimizer, config)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    levels = 5 if setup.architecture.get("deep_supervision") else 1
    loss_fn = build_loss(levels)
    history, best_ema, best_epoch, start = _empty_history(), -math.inf, None, 0

    latest = checkpoint_json(folder, "latest")
    if latest.is_file():
        checkpoint = load_checkpoint(latest)
        load_weights(net, checkpoint.model, latest)
        assert checkpoint.optimizer is not None
        optimizer.load_state_dict(checkpoint.optimizer)
        scheduler.load_state_dict(checkpoint.state["scheduler"])
        scaler.load_state_dict(checkpoint.state["scaler"])
        history, start = checkpoint.state["history"], checkpoint.epoch
        best_epoch, best_ema = checkpoint.state["best_epoch"], checkpoint.state["best_ema"] or -math.inf
        LOGGER.info("fold %d: resuming after epoch %d of %d", setup.fold, start, config.epochs)

    transforms = training_transforms(
        config.patch_size, Augmentation(elastic=config.elastic), config.foreground_fraction
    )
    epoch_seconds: list[float] = []
    for epoch in range(start, config.epochs):
        expected = float(np.mean(epoch_seconds)) if epoch_seconds else 0.0
        if not budget.allows_epoch(expected):
            LOGGER.info(
                "fold %d: stopping before epoch %d (time or epoch budget reached)", setup.fold, epoch + 1
            )
            break
        began = time.monotonic()
        torch.manual_seed(derived_seed(config.seed, setup.fold, epoch))
        net.train()
        losses = []
        loader = _epoch_loader(setup, config, transforms, epoch, device)
        bar = tqdm(
            loader,
            desc=f"fold {setup.fold} epoch {epoch + 1}/{config.epochs}",
            unit="it",
            disable=not config.progress,
            leave=False,
        )
        for images, labels in bar:
            if budget.expired():
                break
            images = images.to(device, non_blocking=True, memory_format=layout)
            labels = labels.to(device, non_blocking=True).float()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = loss_fn(_outputs(net(images)), labels)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if len(losses) < config.iterations_per_epoch:
            LOGGER.info(
                "fold %d: time budget reached inside epoch %d; it is discarded", setup.fold, epoch + 1
            )
            break
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val_dice = ema = None
        # The last epoch is validated only when its score may pick the exported weights: with
        # --export last the final validation through the engine scores these weights anyway.
        last_may_be_exported = epoch + 1 == config.epochs and config.export == "best"
        if setup.val_cases and ((epoch + 1) % config.val_every == 0 or last_may_be_exported):
            val_dice = fast_validation_dice(net, setup.val_cases, config.patch_size, device, amp)
            previous = next((v for v in reversed(history["val_dice_ema"]) if v is not None), None)
            ema = val_dice if previous is None else EMA_MOMENTUM * previous + (1 - EMA_MOMENTUM) * val_dice
        seconds = time.monotonic() - began
        epoch_seconds.append(seconds)
        for key, value in zip(
            history, (epoch + 1, float(np.mean(losses)), val_dice, ema, lr, seconds), strict=True
        ):
            history[key].append(value)
        LOGGER.info(
            "fold %d epoch %d/%d: loss %.4f%s, lr %.2e, %.0f s",
            setup.fold,
            epoch + 1,
            config.epochs,
            history["train_loss"][-1],
            "" if val_dice is None else f", val Dice {val_dice:.4f} (avg {ema:.4f})",
            lr,
            seconds,
        )
        improved = ema is not None and ema > best_ema
        if improved:
            best_ema, best_epoch = ema, epoch + 1
            save_checkpoint(folder, "best", Checkpoint(epoch + 1, net.state_dict(), None, {"ema": ema}))
        state = {
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "history": history,
            "best_epoch": best_epoch,
            "best_ema": None if best_epoch is None else best_ema,
        }
        save_checkpoint(
            folder, "latest", Checkpoint(epoch + 1, net.state_dict(), optimizer.state_dict(), state)
        )
        plot_history({setup.fold: history}, folder / "progress.png")
        budget.epochs_run += 1
    completed = history["epoch"][-1] if history["epoch"] else 0
    return FoldOutcome(setup.fold, completed, completed >= config.epochs, history, best_epoch)
