"""PNG plots of the evaluation report (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: Mapping[str, Any], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    train = history.get("train", [])
    if train:
        steps = [h["step"] for h in train]
        losses = [h["loss"] for h in train]
        ax.plot(steps, losses, label="train loss", alpha=0.5)
        window = max(1, len(losses) // 20)
        if window > 1:
            smooth = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
                      for i in range(len(losses))]
            ax.plot(steps, smooth, label=f"train loss (mean of {window})")
    val = history.get("validation", [])
    if val:
        ax.plot([h["step"] for h in val], [h["loss"] for h in val], "o-", label="validation loss")
    if history.get("best"):  # training.keepBest / earlyStoppingPatience
        ax.plot([history["best"]["step"]], [history["best"]["loss"]], "r*", markersize=14, label="kept weights")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title("Learning curve")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def segments_bar(segments: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str, path: Path) -> None:
    plt = _pyplot()
    names = sorted(segments)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 3.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [segments[n]["teacher"].get(metric, 0.0) for n in names], 0.4,
           label="teacher")
    ax.bar([x + 0.2 for x in xs], [segments[n]["student"].get(metric, 0.0) for n in names], 0.4,
           label="student")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"Teacher vs student per segment ({metric})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
