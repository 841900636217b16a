"""What the benchmark scripts do around their measurements: kept runs, result files, timers, tables.

A long benchmark is a list of training runs that several workers may share and that survive
being cut off: a run belongs to the first live process that locks its folder (:func:`claim`),
a finished run's ``result.json`` carries a fingerprint of what it depends on, and a copy is
kept in ``benchmarks/results/<benchmark>/`` (:func:`keep`), committed, so a rerun skips it while
the fingerprint holds (:func:`run_and_keep`). The scripts import this as a sibling module:
``python benchmarks/<script>.py`` puts this folder on the import path.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

# -- run locking: a run belongs to the first live process that locks its folder ---------------


def lock_owner(lock: Path) -> int | None:
    """The live process holding a run's lock file, or None (no lock, or its worker died)."""
    try:
        pid = int(lock.read_text() or 0)
        os.kill(pid, 0)
    except PermissionError:
        return pid  # alive, owned by another user
    except (ValueError, ProcessLookupError, FileNotFoundError):
        return None
    return pid


def claim(out: Path) -> bool:
    """Let several workers share the runs: True when this process holds ``out`` (it creates
    ``out/worker.lock``, or already holds it); a lock left by a dead process is taken over."""
    out.mkdir(parents=True, exist_ok=True)
    lock = out / "worker.lock"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = lock_owner(lock)
            if pid is None:
                lock.unlink(missing_ok=True)  # stale: its worker died
                continue
            return pid == os.getpid()
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True


# -- box-prompted decoding --------------------------------------------------------------------


def prompted_images(dataset: Any, to_label: dict[int, int], max_images: int | None = None
                    ) -> Iterator[tuple[int, list[int], Any, Any, Any]]:
    """``(image_id, ann_ids, boxes, labels, image)`` for each image of ``dataset`` (a
    boxmask.data.coco.CocoInstances; the first ``max_images``) with at least one prompt: its
    non-crowd ground-truth boxes and labels (boxmask.evaluation.run.prompts_for_image, the
    evaluation's box-prompted setting) and the image tensor."""
    from boxmask.evaluation.run import prompts_for_image

    ids = dataset.ids if max_images is None else dataset.ids[:max_images]
    for image_id in ids:
        ann_ids, boxes, labels = prompts_for_image(dataset.coco, image_id, to_label)
        if ann_ids:
            yield image_id, ann_ids, boxes, labels, dataset.load_image(image_id)


def runtime_pixels(image: Any, model_cfg: dict[str, Any]) -> Any:
    """``image`` (``[3, H, W]`` in [0, 1]) as the runtime's encoder sees it: uint8 RGB, resized
    by the runtime's own resize (boxmask.runtime.transforms) to the model's ``min_size`` /
    ``max_size``: ``[H', W', 3]`` uint8, the pixels the review score and the CRF read."""
    import numpy as np

    from boxmask.runtime.transforms import resize_image

    rgb = (image.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    resized = resize_image(rgb, model_cfg["min_size"], model_cfg["max_size"])
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


class PromptedDecode(NamedTuple):
    """What :func:`decode_prompts` gives."""

    features: Any
    resized: tuple[int, int]
    scaled: Any  # [N, 4] the boxes in the resized image's pixels
    logits: Any  # [N, 1, R, R]
    class_scores: Any
    used: Any
    quality: Any
    offset: tuple[float, float]  # what paste_masks moves the boxes by


def decode_prompts(model: Any, image: Any, boxes: Any, labels: Any) -> PromptedDecode:
    """One image encoded and its boxes (original pixels) decoded box-prompted, as the runtime's
    decoder does: the mask logits, class scores, labels used and the head's IoU (None without
    it), with what pasting and the review score need beside them."""
    h, w = image.shape[-2:]
    features, resized = model.encode(image)
    scaled = boxes * model.resize_scale((h, w), resized).repeat(2)[None]
    logits, class_scores, used, quality = model.roi_heads.decode_boxes_with_quality(
        features, scaled, labels, resized)
    return PromptedDecode(features, resized, scaled, logits, class_scores, used, quality,
                          model.paste_offset((h, w), resized))



# -- result files ------------------------------------------------------------------------------


def write_json(path: Path, data: Any, indent: int | None = 1) -> None:
    """Write ``data`` as JSON through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent))
    os.replace(tmp, path)


def keep(result_file: Path, kept: Path) -> None:
    """Copy a run's result file to its kept place, atomically (runs/ may not outlive the machine)."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    tmp = kept.with_suffix(".tmp")
    tmp.write_bytes(result_file.read_bytes())
    tmp.replace(kept)


def jsonl_records(path: Path) -> list[dict]:
    """The JSON records of a log such as a run's ``metrics.jsonl`` (other lines skipped)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()
            if line.strip().startswith("{")]


def kept_result(out: Path, kept: Path, fingerprint: str) -> dict | None:
    """A finished run's result while its fingerprint holds: the kept copy, or the run folder's
    ``result.json`` (then kept); None when neither is current."""
    for done in (kept, out / "result.json"):
        if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
            keep(done, kept)
            return json.loads(done.read_text())
    return None


# -- one kept training run ---------------------------------------------------------------------


def train_and_evaluate(cfg: Any, out: Path) -> dict:
    """Train ``cfg`` into ``out`` (resuming from its last epoch checkpoint), evaluate the final
    checkpoint, and return the figures a run's result reports."""
    import torch

    from boxmask.evaluation.run import evaluate_checkpoint
    from boxmask.training.trainer import train

    t0 = time.time()
    ckpt = train(cfg, resume=Path("auto"))
    train_s = time.time() - t0
    report = evaluate_checkpoint(ckpt, out_dir=out / "eval", progress=False)
    iters = [r for r in jsonl_records(out / "metrics.jsonl") if r.get("kind") == "iter"]
    return {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "train_seconds": round(train_s, 1),
        "iterations": iters[-1]["iteration"] if iters else None,
        "seconds_per_iter": (round(sum(r.get("time_per_iter", 0) for r in iters) / len(iters), 3)
                             if iters else None),
        "losses": sorted({k for r in iters for k in r if k.startswith("loss_")}),
        **report_figures(report),
    }


def report_figures(report: dict) -> dict:
    """What a kept run reports of an evaluation report (``evaluate_checkpoint``'s): the mask AP
    of the unseen and seen categories and the box-prompted figures."""
    return {"unseen_mask_ap": report["segm"]["unseen"]["AP"],
            "seen_mask_ap": report["segm"]["seen"]["AP"],
            "box_prompted": report["box_prompted"]}


def run_and_keep(out: Path, kept: Path, head: dict, config: Callable[[], Any],
                 prepare: Callable[[], None] = lambda: None) -> dict:
    """One run of a benchmark's list, kept: its result, ``{}`` when it is not run here.

    ``head`` opens the result and holds its ``fingerprint``; a finished run with that
    fingerprint is returned as it is. Otherwise ``config()`` builds the run's config (None
    refuses the run), the run is claimed (another live worker may hold it), ``prepare()`` makes
    its data, and it is trained, evaluated, written to ``out/result.json`` and kept.
    """
    if (done := kept_result(out, kept, head["fingerprint"])) is not None:
        return done
    cfg = config()
    if cfg is None or not claim(out):
        return {}
    prepare()
    result = {**head, **train_and_evaluate(cfg, out)}
    write_json(out / "result.json", result)
    keep(out / "result.json", kept)
    return result


# -- timers and tables -------------------------------------------------------------------------


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """The median wall-clock time of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A markdown table: ``head``'s cells, then one line per row (cells as ``str``); ``align``
    has a letter per column, ``r`` for right-aligned (numbers), anything else left."""
    marks = ["---:" if a == "r" else "---" for a in align.ljust(len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
