"""PNG plots of an evaluation report (matplotlib, Agg: no display needed).

- ``overlap_ap.png``: mask AP per overlap bin for unseen and seen categories (detections),
  beside the box-prompted mean IoU per bin when the report has it;
- ``false_positives.png``: where the false positives come from, by predicted side;
- ``box_prompted_iou.png``: histogram of box-prompted mask IoU, unseen vs seen.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display, safe in servers and CI

import matplotlib.pyplot as plt
import numpy as np

SIDE_COLORS = {"unseen": "#d62728", "seen": "#1f77b4", "all": "#7f7f7f"}
SOURCE_COLORS = {"background": "#bcbd22", "seen": "#1f77b4", "unseen": "#d62728"}


def _value(x: float | None) -> float:
    return np.nan if x is None else float(x)


def _bin_labels(bins: list[dict]) -> list[str]:
    return [f"[{b['lo']:.2g}, {min(b['hi'], 1.0):.2g})" for b in bins]


def plot_overlap_ap(report: dict, path: Path, iou_type: str = "segm") -> Path:
    """AP per overlap bin (and box-prompted IoU per bin) for unseen and seen categories."""
    bins = report[iou_type]["by_overlap_bin"]
    prompted = report.get("box_prompted")
    ncols = 2 if prompted else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    x = np.arange(len(bins))
    width = 0.38
    ax = axes[0, 0]
    for k, side in enumerate(("unseen", "seen")):
        ap = [_value(b["ap"][side]["AP"]) for b in bins]
        ax.bar(x + (k - 0.5) * width, ap, width, label=side, color=SIDE_COLORS[side])
    ax.set_xticks(x, _bin_labels(bins), rotation=20)
    ax.set_xlabel("overlap O of the instance's box with other objects")
    ax.set_ylabel(f"{'mask' if iou_type == 'segm' else 'box'} AP")
    ax.set_title("Detection AP per overlap bin")
    ax.set_ylim(0, 1)
    ax.legend()
    if prompted:
        ax = axes[0, 1]
        pbins = prompted["by_overlap_bin"]
        for k, side in enumerate(("unseen", "seen")):
            iou = [_value(b["mean_iou"][side]) for b in pbins]
            ax.bar(x + (k - 0.5) * width, iou, width, label=side, color=SIDE_COLORS[side])
        ax.set_xticks(x, _bin_labels(pbins), rotation=20)
        ax.set_xlabel("overlap O of the instance's box with other objects")
        ax.set_ylabel("mean mask IoU")
        ax.set_title("Box-prompted mask IoU per overlap bin")
        ax.set_ylim(0, 1)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_false_positives(report: dict, path: Path) -> Path:
    """Stacked bars: false positives by predicted side, split by what they hit."""
    fp = report["false_positives"]["thresholded"]
    groups = ["all", "unseen", "seen"]
    tallies = [fp] + [fp["by_predicted"][s] for s in ("unseen", "seen")]
    fig, ax = plt.subplots(figsize=(6, 4))
    bottom = np.zeros(len(groups))
    for source, color in SOURCE_COLORS.items():
        counts = np.array([t["counts"][source] for t in tallies], dtype=float)
        ax.bar(groups, counts, bottom=bottom, label=f"on {source}" if source == "background"
               else f"on a {source} object", color=color)
        bottom += counts
    thr = fp["score_threshold"]
    ax.set_xlabel("predicted category")
    ax.set_ylabel("false positives" + ("" if thr is None else f" (score >= {thr:g})"))
    ax.set_title(f"False positives at IoU {report['false_positives']['iou_threshold']:g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_box_prompted_iou(report: dict, path: Path) -> Path:
    """Histogram of box-prompted mask IoU for unseen and seen instances."""
    hist = report["box_prompted"]["iou_histogram"]
    edges = np.asarray(hist["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    width = np.diff(edges) * 0.45
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, side in enumerate(("unseen", "seen")):
        counts = np.asarray(hist[side], dtype=float)
        share = counts / counts.sum() if counts.sum() else counts
        ax.bar(centers + (k - 0.5) * width, share, width, label=f"{side} (n={int(counts.sum())})",
               color=SIDE_COLORS[side])
    ax.set_xlabel("mask IoU with the ground truth")
    ax.set_ylabel("share of instances")
    ax.set_title("Box-prompted masks (ground-truth box and label)")
    ax.set_xlim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(report: dict, out_dir: Path) -> list[Path]:
    """Every plot the report has data for; returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    iou_type = "segm" if "segm" in report else "bbox"
    written = [plot_overlap_ap(report, out_dir / "overlap_ap.png", iou_type)]
    if "false_positives" in report:
        written.append(plot_false_positives(report, out_dir / "false_positives.png"))
    if "box_prompted" in report:
        written.append(plot_box_prompted_iou(report, out_dir / "box_prompted_iou.png"))
    return written
