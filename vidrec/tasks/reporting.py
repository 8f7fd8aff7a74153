"""Plots and text reports written after training and evaluation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["plot_confusion_matrix", "format_test_report"]


def plot_confusion_matrix(confusion: torch.Tensor, class_names: list[str], path: Path, *, title: str = "") -> Path:
    """Save a row-normalised confusion matrix (counts annotated) as a PNG."""
    counts = confusion.to(torch.float64)
    rows = counts.sum(dim=1, keepdim=True).clamp_min(1)
    norm = (counts / rows).numpy()
    k = len(class_names)
    size = max(4.0, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_test_report(results: dict[str, Any]) -> str:
    """A short plain-text report of ``Classification.test_results``."""
    lines = [f"test accuracy  {results['test/acc']:.2%}", f"macro-F1       {results['test/f1_macro']:.2%}"]
    if "test/acc_top5" in results:
        lines.append(f"top-5 accuracy {results['test/acc_top5']:.2%}")
    if "test/group_acc" in results:
        lines.append(
            f"per-video/recording accuracy {results['test/group_acc']:.2%} ({int(results['test/groups'])} groups;"
            f" majority vote {results.get('test/group_acc_vote', float('nan')):.2%})"
        )
    if "test/bout_acc" in results:
        lines.append(
            f"per-bout accuracy {results['test/bout_acc']:.2%} ({int(results['test/bouts'])} runs of one recording"
            f" and one label; majority vote {results['test/bout_acc_vote']:.2%})"
        )
    lines.append("")
    lines.append(f"{'class':<24} {'acc':>8} {'F1':>8}")
    for name, m in results["per_class"].items():
        acc = "-" if m["acc"] is None else f"{m['acc']:.2%}"
        f1 = "-" if m["f1"] is None else f"{m['f1']:.2%}"
        lines.append(f"{name:<24} {acc:>8} {f1:>8}")
    if results.get("per_subject"):
        lines.append("")
        lines.append("accuracy per test subject (windows):")
        cells = [f"{s}: {m['acc']:.1%} ({int(m['windows'])})" for s, m in results["per_subject"].items()]
        lines.extend("  " + ", ".join(cells[i : i + 5]) for i in range(0, len(cells), 5))
    return "\n".join(lines)
