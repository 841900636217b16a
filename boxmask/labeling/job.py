"""A whole labeling job: plan, label (resumably), build the output, write it and the report.

Files beside the output ``OUT.json``:
- ``OUT.json.journal.jsonl``: the resume journal while the job runs (deleted when it ends);
- ``OUT.report.json``: the report (summary, skipped images, unknown categories).

The input file is only ever read. The output and the report are replaced atomically.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from boxmask.config import ConfigError
from boxmask.labeling.coco_file import read_coco
from boxmask.labeling.engines import (
    batch_predictor_options,
    load_predictor,
    local_predictor_threads,
    require_ray,
    run_local,
    run_ray,
)
from boxmask.labeling.journal import JournalError, LabelJournal, read_journal
from boxmask.labeling.label_map import load_label_map
from boxmask.labeling.model_source import model_version, resolve_model_dir
from boxmask.labeling.options import LabelOptions
from boxmask.labeling.output import apply_results, remove_stale_temporaries, write_json_atomic
from boxmask.labeling.plan import LabelPlan, build_plan
from boxmask.labeling.progress import image_progress
from boxmask.labeling.report import build_report, journal_path, report_path
from boxmask.runtime.card import ModelCard


def _check_paths(options: LabelOptions) -> None:
    if not options.coco.is_file():
        raise ConfigError(f"input annotations {options.coco} do not exist")
    if not options.images.is_dir():
        raise ConfigError(f"images folder {options.images} does not exist")
    if options.out.is_dir():
        raise ConfigError(f"--out {options.out} is a folder: give the output file's path")
    if not options.out.parent.is_dir():
        raise ConfigError(f"the folder of --out ({options.out.parent}) does not exist")
    # The input is never modified: not by the output, nor by the report or journal beside it.
    coco = options.coco.resolve()
    for what, path in (("--out", options.out), ("the report", report_path(options.out)),
                       ("the journal", journal_path(options.out))):
        if path.resolve() == coco:
            raise ConfigError(f"{what} ({path}) would overwrite the input {options.coco}: "
                              "choose another --out; the input is never modified")


def _check_journal_records(path: Path, plan: LabelPlan, records: dict[int, dict[str, Any]]) -> None:
    for index, record in records.items():
        if index >= len(plan.tasks) or plan.tasks[index].image_id != record.get("image_id"):
            raise JournalError(f"{path}: result for image #{index} does not match the input; "
                               f"delete the journal to start over")


def run_label_job(options: LabelOptions, console: Console | None = None) -> dict[str, Any]:
    """Run `options` to the end and return the report (also written beside the output).

    Raises `ConfigError` for bad input or options, `ModelNotFound` when ``options.model`` names
    no model, and `JournalError` when a journal is in the way; a KeyboardInterrupt leaves the
    journal for ``--resume``.
    """
    started = time.perf_counter()
    console = console or Console(stderr=True)
    _check_paths(options)
    # Every record the labeler cannot use is refused here, before a journal exists.
    input_bytes, coco = read_coco(options.coco)

    if options.engine == "ray":
        require_ray()
    model_dir = resolve_model_dir(options.model)
    card = ModelCard.load(model_dir, verify=False)  # the Predictor verifies the graphs it loads
    if options.pre_annotate and "detector" not in card.files:
        raise ConfigError(f"--pre-annotate needs a detector, and the model {card.name} "
                          f"({model_dir}) was exported without one: export it again, or drop "
                          "--pre-annotate")
    # The predictor's options, once: the local engine's, or each Ray actor's (one image at a
    # time on one thread). Load (local) or check (ray: the actors load it) the model before
    # any journal exists, so a broken model directory is a plain error, not an unfinished run.
    local = options.engine == "local"
    predictor_options = batch_predictor_options(
        options.precision, threads=local_predictor_threads(options.workers) if local else 1,
        concurrent_images=options.workers if local else 1,
        batch_bytes=options.settings.batch_bytes)
    if local:
        predictor = load_predictor(model_dir, predictor_options)
    else:
        card.verify_files(model_dir, [k for k in ("encoder", "decoder") if k in card.files])
    model = {"name": card.name, "version": model_version(model_dir)}
    label_map = load_label_map(options.label_map) if options.label_map else {}
    plan = build_plan(coco, options.images, {c.name: c.id for c in card.categories},
                      label_map=label_map, only_missing=options.only_missing,
                      pre_annotate=options.pre_annotate)

    # Everything the output depends on; a resume must match it exactly.
    job = {"input_sha256": hashlib.sha256(input_bytes).hexdigest(), "model": model,
           "settings": options.settings.to_dict(), "only_missing": options.only_missing,
           "pre_annotate": options.pre_annotate, "label_map": dict(sorted(label_map.items())),
           "precision": options.precision}
    jpath = journal_path(options.out)
    remove_stale_temporaries(options.out)
    if options.resume:
        journal, done = LabelJournal.resume(jpath, job)
        _check_journal_records(jpath, plan, done)
        if done:
            console.print(f"resuming: {len(done)} of {len(plan.tasks)} images already labeled")
    else:
        if jpath.exists():
            raise JournalError(
                f"{jpath} holds the progress of an unfinished run: pass --resume to continue "
                f"it, or delete it to start over")
        journal, done = LabelJournal.start(jpath, job), {}

    todo = [t for t in plan.tasks if t.index not in done]
    with journal, image_progress(len(plan.tasks), len(done), console=console,
                                 enabled=options.progress) as advance:
        def on_result(result: dict[str, Any]) -> None:
            journal.append(result)
            advance()

        if todo and options.engine == "local":
            run_local(predictor, todo, options.settings, on_result, workers=options.workers)
        elif todo:
            run_ray(model_dir, todo, options.settings, on_result, predictor_options,
                    workers=options.workers, images_per_batch=options.images_per_batch)

    # The output is built from the journal alone, so a resumed run and a clean one agree.
    _, results, _ = read_journal(jpath)
    missing = [t.index for t in plan.tasks if t.index not in results]
    if missing:
        raise RuntimeError(f"{len(missing)} images have no result after the run (first: "
                           f"#{missing[0]}); rerun with --resume")
    counts = apply_results(coco, plan, results, model)
    write_json_atomic(options.out, coco)
    rpath = report_path(options.out)
    report = build_report(coco, plan, results, counts, resumed=len(done),
                          seconds=time.perf_counter() - started, job=job,
                          paths={"input": str(options.coco), "images": str(options.images),
                                 "output": str(options.out), "report": str(rpath),
                                 "model_dir": str(model_dir), "engine": options.engine})
    write_json_atomic(rpath, report, indent=2)
    jpath.unlink(missing_ok=True)
    return report
