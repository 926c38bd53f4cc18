"""Loss and validation curves as PNG (nnU-Net's ``progress.png``, one line per fold)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["plot_history"]


def plot_history(histories: Mapping[int, Mapping[str, list[Any]]], path: Path) -> Path:
    """Training loss, validation Dice (raw and moving average) and learning rate per epoch, per fold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mednet_pvs.utils.atomic import atomic_path

    fig, (loss_ax, dice_ax, lr_ax) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for fold, history in sorted(histories.items()):
        epochs = history["epoch"]
        (line,) = loss_ax.plot(epochs, history["train_loss"], label=f"fold {fold}")
        validated = [
            (e, d, m)
            for e, d, m in zip(epochs, history["val_dice"], history["val_dice_ema"], strict=True)
            if d is not None
        ]
        if validated:
            ep, dice, ema = zip(*validated, strict=True)
            dice_ax.plot(ep, dice, ".", color=line.get_color(), alpha=0.5)
            dice_ax.plot(ep, ema, "-", color=line.get_color(), label=f"fold {fold} (moving average)")
        lr_ax.plot(epochs, history["lr"], color=line.get_color())
    loss_ax.set_ylabel("training loss\n(deep-supervised Dice + CE)")
    dice_ax.set_ylabel("validation Dice\n(threshold 0.5)")
    dice_ax.set_ylim(0, 1)
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("epoch")
    for ax in (loss_ax, dice_ax, lr_ax):
        ax.grid(alpha=0.3)
    loss_ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)
