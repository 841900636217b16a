"""The evaluation report on disk (``report.json``) and on the terminal (rich tables)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from boxmask.files import atomic_output


def _json_safe(value):
    # JSON has no NaN/inf: a metric that cannot be computed is null, as in the rest of the report.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    return value


def write_json(obj, path: Path) -> Path:
    """Write JSON atomically (a crash never leaves half a report under the real name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, "w") as f:
        json.dump(_json_safe(obj), f, indent=1)
    return path


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}"


def print_summary(report: dict, console: Console) -> None:
    """AP tables (unseen / seen / all, overlapped subset, per bin), false positives, box-prompted."""
    sides = ("unseen", "seen", "all")
    title = "Detection AP (COCO, x100)"
    if report.get("checkpoint"):
        title += f" - {report['checkpoint']}"
    table = Table(title=title)
    table.add_column("metric")
    for side in sides:
        table.add_column(side, justify="right")
    for iou_type, name in (("segm", "mask"), ("bbox", "box")):
        if iou_type not in report:
            continue
        sec = report[iou_type]
        for stat in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            table.add_row(f"{name} {stat}", *(_pct(sec[s][stat]) for s in sides))
        thr = report["overlap"]["threshold"]
        table.add_row(f"{name} AP, O >= {thr:g}", *(_pct(sec["overlapped"][s]["AP"]) for s in sides))
    console.print(table)

    ov = report["overlap"]
    iou_type = "segm" if "segm" in report else "bbox"
    bins = Table(title=f"{'Mask' if iou_type == 'segm' else 'Box'} AP per overlap bin (x100)")
    bins.add_column("O", no_wrap=True)
    bins.add_column("n unseen/seen", justify="right")
    for side in sides:
        bins.add_column(f"AP {side}", justify="right")
    prompted = report.get("box_prompted")
    if prompted:
        bins.add_column("prompted IoU unseen", justify="right")
        bins.add_column("prompted IoU seen", justify="right")
    for k, b in enumerate(report[iou_type]["by_overlap_bin"]):
        n = ov["num_per_bin"][k]
        row = [f"{b['lo']:.2g}-{min(b['hi'], 1.0):.2g}", f"{n['unseen']}/{n['seen']}",
               *(_pct(b["ap"][s]["AP"]) for s in sides)]
        if prompted:
            pb = prompted["by_overlap_bin"][k]["mean_iou"]
            row += [_pct(pb["unseen"]), _pct(pb["seen"])]
        bins.add_row(*row)
    console.print(bins)

    if "false_positives" in report:
        fp = report["false_positives"]
        t = fp["thresholded"]
        thr = t["score_threshold"]
        fpt = Table(title=f"False positives at IoU {fp['iou_threshold']:g}"
                          + ("" if thr is None else f", score >= {thr:g}"))
        fpt.add_column("predicted")
        for source in ("background", "seen", "unseen"):
            fpt.add_column(f"on {source}", justify="right")
        fpt.add_column("total", justify="right")
        for name, tally in (("all", t), ("unseen", t["by_predicted"]["unseen"]),
                            ("seen", t["by_predicted"]["seen"])):
            fpt.add_row(name, *(str(tally["counts"][s]) for s in ("background", "seen", "unseen")),
                        str(tally["total"]))
        console.print(fpt)

    if prompted:
        bp = Table(title="Box-prompted (ground-truth box + label), x100")
        bp.add_column("metric")
        for side in sides:
            bp.add_column(side, justify="right")
        bp.add_row("mean mask IoU", *(_pct(prompted["mean_iou"][s]) for s in sides))
        bp.add_row(f"mean mask IoU, O >= {prompted['overlapped']['threshold']:g}",
                   *(_pct(prompted["overlapped"]["mean_iou"][s]) for s in sides))
        for stat in ("AP", "AP50", "AP75"):
            bp.add_row(f"mask {stat}", *(_pct(prompted["mask_ap"][s][stat]) for s in sides))
        bp.add_row(f"mask AP, O >= {prompted['overlapped']['threshold']:g}",
                   *(_pct(prompted["overlapped"]["mask_ap"][s]["AP"]) for s in sides))
        box = prompted.get("box_baseline")
        if box:
            # The box the annotator drew, taken as the mask: a prompted mask counts only by
            # its margin over this.
            thr = f"O >= {box['overlapped']['threshold']:g}"
            bp.add_section()
            bp.add_row("box as mask: mean IoU", *(_pct(box["mean_iou"][s]) for s in sides))
            bp.add_row(f"box as mask: mean IoU, {thr}",
                       *(_pct(box["overlapped"]["mean_iou"][s]) for s in sides))
            bp.add_row("box as mask: mask AP", *(_pct(box["mask_ap"][s]["AP"]) for s in sides))
            margin = prompted["margin_over_box"]
            bp.add_section()
            bp.add_row("margin over box: mean IoU", *(_signed(margin["mean_iou"][s]) for s in sides))
            bp.add_row(f"margin over box: mean IoU, {thr}",
                       *(_signed(margin["overlapped"]["mean_iou"][s]) for s in sides))
            bp.add_row("margin over box: mask AP", *(_signed(margin["mask_ap"][s]) for s in sides))
        console.print(bp)
        cats = prompted.get("by_category")
        if cats:
            box_cats = {c["id"]: c for c in (box or {}).get("by_category", [])}
            ct = Table(title="Box-prompted mean mask IoU by category, x100")
            for col in ("category", "split", "instances", "mean IoU",
                        f"O >= {prompted['overlapped']['threshold']:g}"):
                ct.add_column(col, justify="left" if col in ("category", "split") else "right")
            if box_cats:
                ct.add_column("box as mask", justify="right")
                ct.add_column("margin over box", justify="right")
            margins = prompted.get("margin_over_box", {}).get("by_category", {})
            for c in cats:
                row = [c["name"], "seen" if c["seen"] else "unseen", str(c["num_instances"]),
                       _pct(c["mean_iou"]), _pct(c["overlapped_mean_iou"])]
                if box_cats:
                    row += [_pct(box_cats.get(c["id"], {}).get("mean_iou")),
                            _signed(margins.get(c["name"]))]
                ct.add_row(*row)
            console.print(ct)
    if report.get("out_dir"):
        console.print(f"report: {Path(report['out_dir']) / 'report.json'}")
