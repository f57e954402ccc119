"""PNG plots of training runs and evaluations (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_confusion", "plot_per_label_f1", "plot_training_curves"]


def plot_training_curves(history: dict[str, Any], path: str | Path) -> Path:
    """Train/valid loss and the validation selection metric per epoch."""
    epochs = history.get("epochs", [])
    x = [e["epoch"] for e in epochs]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(x, [e["train_loss"] for e in epochs], marker="o", label="train")
    if epochs and "valid_loss" in epochs[0]:
        ax_loss.plot(x, [e["valid_loss"] for e in epochs], marker="o", label="valid")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_metric.plot(x, [e["score"] for e in epochs], marker="o", color="tab:green")
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel(history.get("selection_metric", "validation score"))
    ax_metric.set_ylim(0, 1)
    fig.suptitle(f"{history.get('model', '')} {'/'.join(history.get('tasks', []))}".strip())
    return _save(fig, path)


def plot_per_label_f1(per_label: dict[str, dict[str, float]], path: str | Path, title: str) -> Path:
    """One bar per label, annotated with its F1 and support."""
    names = list(per_label)
    f1 = [per_label[n]["f1"] for n in names]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(names)), 4))
    bars = ax.bar(names, f1, color="tab:blue")
    for bar, n in zip(bars, names, strict=True):
        ax.annotate(
            f"{per_label[n]['f1']:.2f}\n(n={int(per_label[n]['support'])})",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("F1")
    ax.set_title(title)
    return _save(fig, path)


def plot_confusion(matrix: list[list[int]], names: list[str], path: str | Path, title: str) -> Path:
    """Counts (true rows × predicted columns), each row also shaded by its share."""
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            color = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
