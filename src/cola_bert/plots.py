"""PNG plots of a run: learning curves per epoch and the validation confusion matrix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def learning_curves(history: Sequence[dict[str, float]], path: Path) -> None:
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train/loss", "train loss"), ("val/loss", "val loss")):
        if any(key in row for row in history):
            ax_loss.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    ax_loss.legend()
    for key in ("val/mcc", "val/accuracy", "val/f1", "val/mcc_in_domain", "val/mcc_out_of_domain"):
        if any(key in row for row in history):
            ax_score.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=key)
    ax_score.set(xlabel="epoch", title="Validation scores")
    ax_score.legend(fontsize="small")
    for ax in (ax_loss, ax_score):
        ax.grid(alpha=0.3)
    _save(fig, path)


def confusion_matrix(matrix: Sequence[Sequence[int]], label_names: Sequence[str], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    n = len(label_names)
    ax.set_xticks(range(n), label_names)
    ax.set_yticks(range(n), label_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    peak = max(max(row) for row in matrix) or 1
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(matrix[i][j])), ha="center", va="center",
                    color="white" if matrix[i][j] > peak / 2 else "black")
    _save(fig, path)
