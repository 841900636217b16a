"""The one `boxmask` command: a sub-command per stage.

Heavy imports (torch, onnxruntime, fastapi) happen inside each command, so `boxmask --help`
is instant and a server-only install never touches torch.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from typer.core import TyperGroup

from boxmask.config import ConfigError


class _PlainFlags(TyperGroup):
    """Typer 0.29's help gives every option a type column, flags too: `--fp16 <bool>`,
    `--help <bool>` read as if they took a value. A flag's metavar is blanked here, for this
    group's own options and for each command it hands out."""

    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        return _blank_flag_metavars(super().get_params(ctx))

    def get_command(self, ctx, cmd_name):  # type: ignore[no-untyped-def]
        command = super().get_command(ctx, cmd_name)
        if command is not None and not isinstance(command, TyperGroup):
            _blank_flag_metavars(command.get_params(ctx))  # its --help included
        return command


def _blank_flag_metavars(params):  # type: ignore[no-untyped-def]
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    return params


app = typer.Typer(
    name="boxmask",
    cls=_PlainFlags,
    help="Boxes to class-specific instance masks (teacher-student Mask R-CNN, Zhao et al. 2022).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Datasets: generate the synthetic overlap dataset, inspect splits.",
                       cls=_PlainFlags, no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print an error that says what to do, on one line, and exit without a traceback."""
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"boxmask {version('boxmask')}")
        except PackageNotFoundError:  # a source tree that was never installed
            print("boxmask (not installed: no package metadata)")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the installed version and exit.")) -> None:
    """Boxes to class-specific instance masks (teacher-student Mask R-CNN, Zhao et al. 2022)."""


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the dataset into."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same bytes."),
    images: int = typer.Option(400, "--images", help="Number of training images."),
    val_images: int = typer.Option(100, "--val-images", help="Number of validation images."),
    size: int = typer.Option(256, "--size", help="Image side in pixels."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset in OUT."),
    reuse: bool = typer.Option(False, "--reuse",
                               help="Keep a dataset already in OUT when it was made with these "
                                    "same options; refuse one made with others."),
    scene: str = typer.Option("dense", "--scene",
                              help="Scene preset: dense (deep piles, the harder set) or clear "
                                   "(the headline benchmark set; see boxmask.data.synthetic)."),
    generator_version: int = typer.Option(
        None, "--generator-version",
        help="Rebuild a set of an older generator version (1: crosses with a hole where the "
             "bars meet); default the newest."),
    shapes: str = typer.Option("basic", "--shapes",
                               help="Shape set: basic (eight shapes, four seen) or extended "
                                    "(twelve seen, the same four unseen)."),
) -> None:
    """Generate a deterministic COCO-format dataset of heavily overlapping textured shapes."""
    from boxmask.data.synthetic import GENERATOR_VERSION, OutputNotEmpty, ensure_generated, generate

    version = GENERATOR_VERSION if generator_version is None else generator_version
    if reuse and overwrite:
        fail("--reuse keeps an existing dataset and --overwrite replaces it: pass one of them")
    try:
        if reuse:
            stats = ensure_generated(out, seed=seed, num_train=images, num_val=val_images,
                                     image_size=size, scene=scene, version=version,
                                     shapes=shapes)
        else:
            stats = generate(out, seed=seed, num_train=images, num_val=val_images,
                             image_size=size, overwrite=overwrite, scene=scene, version=version,
                             shapes=shapes)
    except OutputNotEmpty as exc:
        fail(f"{exc.path} is not empty: pass --overwrite to replace it (or --reuse to keep it "
             "when it holds this very set)")
    except (FileExistsError, ValueError) as exc:
        fail(str(exc))
    _synth_summary(out, stats)


def _synth_summary(out: Path, stats: dict) -> None:
    """A few lines on what was written; every figure is in OUT/stats.json."""
    splits = stats["splits"]
    counts = " + ".join(f"{s['images']} {name}" for name, s in splits.items() if s["images"])
    instances = " + ".join(f"{s['instances']}" for s in splits.values() if s["images"])
    split = stats["suggested_split"]
    train = splits["train"]
    console.print(f"[green]wrote[/] {out}: {counts} images of {stats['image_size']} px "
                  f"({instances} instances), scene {stats['scene_name']}, generator version "
                  f"{stats['generator_version']}, seed {stats['seed']}", soft_wrap=True)
    console.print(f"categories: {', '.join(split['seen'])} (suggested seen); "
                  f"{', '.join(split['unseen'])} (suggested unseen)", soft_wrap=True)
    console.print(f"train instances overlapped (O >= {stats['overlap_threshold']}): "
                  f"{train['overlap_share']:.0%}; every statistic is in {out / 'stats.json'}",
                  soft_wrap=True)


@data_app.command("split")
def data_split(
    annotations: Path = typer.Argument(..., help="COCO instances JSON."),
    seen: str = typer.Option("all", "--seen",
                             help="coco-voc, coco-nonvoc, all, or comma-separated names/ids."),
) -> None:
    """Show which categories a seen/unseen split marks as seen."""
    import json

    from boxmask.data.splits import parse_seen_option, resolve_seen

    if not annotations.is_file():
        fail(f"{annotations} does not exist")
    cats = json.loads(annotations.read_text())["categories"]
    try:
        seen_ids = resolve_seen(parse_seen_option(seen), cats)
    except ConfigError as exc:
        fail(str(exc))
    for c in sorted(cats, key=lambda c: c["id"]):
        console.print(f"{c['id']:>4}  {c['name']:<24} {'seen' if c['id'] in seen_ids else 'unseen'}")


@app.command("train")
def train(
    config: Path = typer.Argument(..., help="YAML config (see configs/)."),
    overrides: list[str] | None = typer.Argument(None, help="Dotted overrides: train.epochs=2"),
    resume: Path | None = typer.Option(
        None, "--resume", help="Checkpoint to resume from, or 'auto' for OUTPUT_DIR/checkpoint_last.pt."),
) -> None:
    """Train a model (agnostic, teacher_student or oracle) from a config."""
    from boxmask.config import check_data_paths, load_config

    try:
        cfg = load_config(config, overrides or [])
        check_data_paths(cfg)
    except ConfigError as exc:
        fail(str(exc))
    from boxmask.training.trainer import train as run_train

    try:
        run_train(cfg, resume=resume)
    except ConfigError as exc:
        fail(str(exc))


@app.command("eval")
def evaluate(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `boxmask train`."),
    out: Path | None = typer.Option(None, "--out", help="Report folder (default: beside the checkpoint)."),
    config: Path | None = typer.Option(None, "--config", help="Config to use instead of the checkpoint's."),
    overrides: list[str] | None = typer.Option(None, "--set", help="Dotted override, repeatable."),
    max_images: int | None = typer.Option(None, "--max-images", help="Evaluate on the first N images."),
) -> None:
    """Mask/box AP on unseen, seen and all categories, overlap analysis, box-prompted IoU, plots."""
    if not checkpoint.is_file():
        fail(f"checkpoint {checkpoint} does not exist")
    from boxmask.evaluation.run import evaluate_checkpoint

    try:
        report = evaluate_checkpoint(checkpoint, out_dir=out, config_path=config,
                                     overrides=overrides or [], max_images=max_images)
    except ConfigError as exc:
        fail(str(exc))
    from boxmask.evaluation.report import print_summary

    print_summary(report, console)


@app.command("export")
def export(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `boxmask train`."),
    out: Path = typer.Option(..., "--out", help="Folder for the exported model directory."),
    name: str | None = typer.Option(None, "--name", help="Model name in model.json."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write fp16 graphs (GPU runtimes)."),
    int8: bool = typer.Option(False, "--int8", help="Also write int8 encoder and decoder graphs for CPU, calibrated on training images."),
    calibration_images: int = typer.Option(16, "--calibration-images", help="Images for int8 calibration."),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="Build TensorRT engines (needs a GPU)."),
    triton_repo: Path | None = typer.Option(None, "--triton-repo", help="Also write a Triton model repository here."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare ONNX Runtime against torch after export."),
    images: Path | None = typer.Option(None, "--images", help="Images for --int8 calibration, instead of the checkpoint's training images (e.g. for an imported model)."),
    crf: bool | None = typer.Option(None, "--crf/--no-crf", help="Have the runtime refine every mask with a dense CRF on the image (model.served_crf; default: the checkpoint's config)."),
    crf_kernel: str | None = typer.Option(None, "--crf-kernel", metavar="local|wide", help="The CRF's kernel: local (the training sigma's) or wide (as wide as the box; better on the demo model) (model.served_crf_kernel; default: the checkpoint's config)."),
) -> None:
    """Export a checkpoint to ONNX (encoder, decoder, detector) plus model.json."""
    if not checkpoint.is_file():
        fail(f"checkpoint {checkpoint} does not exist")
    from boxmask.export.errors import ExportError
    from boxmask.export.exporter import export_checkpoint

    with console.status("starting (importing torch)") as status:
        stages = _Stages(status)
        try:
            card = export_checkpoint(checkpoint, out, name=name, fp16=fp16, int8=int8,
                                     calibration_images=calibration_images, tensorrt=tensorrt,
                                     triton_repo=triton_repo, opset=opset, check=check,
                                     images=images, served_crf=crf, crf_kernel=crf_kernel,
                                     progress=stages)
        except (ExportError, ConfigError) as exc:
            status.stop()
            fail(f"{stages.current or 'export'} failed: {exc}")
        stages.done()
    _print_export(card, out)


class _Stages:
    """A long job's progress: the running stage under a spinner, each finished one printed with
    its time."""

    def __init__(self, status) -> None:  # type: ignore[no-untyped-def]
        self.status, self.clock = status, time.perf_counter
        self.current: str | None = None
        self.started = 0.0

    def __call__(self, stage: str) -> None:
        self.done()
        self.current, self.started = stage, self.clock()
        self.status.update(f"{stage}...")

    def done(self) -> None:
        if self.current is not None:
            console.print(f"  [green]done[/] {self.current} ({self.clock() - self.started:.1f} s)",
                          highlight=False)
        self.current = None


def _print_export(card: dict, out: Path) -> None:
    """The parity figures (what model.json records), the int8 cost, and where the model is."""
    parity = card.get("parity") or {}
    if parity:
        sizes = ", ".join(f"{h}x{w}" for h, w in parity["sizes"])
        counts = "/".join(str(n) for n in parity["box_counts"])
        console.print(f"parity, ONNX Runtime against torch ({sizes}; {counts} boxes): "
                      f"{'passed' if parity['passed'] else 'FAILED'}", highlight=False)
        for graph, figures in parity["graphs"].items():
            text = "max |diff| " + ", ".join(f"{name} {value:.1e}"
                                             for name, value in figures["max_abs"].items())
            if "min_mask_iou" in figures:
                text += (f"; min mask IoU {figures['min_mask_iou']:.4f} (largest logit "
                         f"{figures['largest_logit']:.3g})")
            text += "".join(f"; {failure}" for failure in figures["failures"])
            console.print(f"  {graph.replace('_', ' '):<17}{text}", highlight=False,
                          soft_wrap=True)
    else:
        console.print("parity not checked (--no-check)")
    int8 = (card.get("quantization") or {}).get("int8")
    if int8 and "mask_iou_vs_fp32_mean" in int8:
        line = (f"int8 encoder: masks against fp32 mean IoU {int8['mask_iou_vs_fp32_mean']:.3f} "
                f"(min {int8['mask_iou_vs_fp32_min']:.3f}) on {int8['held_out_images']} held-out "
                "images")
        if "int8_decoder_mask_iou_vs_fp32_mean" in int8:
            line += f"; with the int8 decoder too {int8['int8_decoder_mask_iou_vs_fp32_mean']:.3f}"
        console.print(line, highlight=False, soft_wrap=True)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    console.print(f"[green]exported[/] {card['name']} to {out} ({', '.join(card['files'])}; "
                  f"{size / 1e6:.1f} MB; every figure is in {out / 'model.json'})", soft_wrap=True)
    console.print(f"serve it: boxmask serve --model-dir {out}", soft_wrap=True)


@app.command("finetune")
def finetune(
    checkpoint: Path = typer.Option(..., "--from", help="The checkpoint to start from: `boxmask train`'s or `boxmask import torchvision`'s."),
    coco: Path = typer.Option(..., "--coco", help="COCO instances file of your training set: boxes for every object; masks where you have them."),
    images: Path = typer.Option(..., "--images", help="Folder its file_names are relative to."),
    out: Path = typer.Option(..., "--out", help="Run folder (training, evaluation, the exported model); rerun to resume."),
    val_coco: Path | None = typer.Option(None, "--val-coco", help="COCO file of a validation set with masks: quality measured against the box."),
    val_images: Path | None = typer.Option(None, "--val-images", help="Folder of the validation images."),
    iterations: int | None = typer.Option(None, "--iterations", min=1, help="Training iterations (default: 12 passes over the data, 200-1500)."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also export int8 graphs for CPU serving."),
    keep_categories: bool = typer.Option(False, "--keep-categories", help="Keep every category the checkpoint knows, also those your file lacks (the model knows both)."),
    overrides: list[str] | None = typer.Argument(None, help="Config overrides: train.lr=0.0005 model.frozen=[backbone]"),
) -> None:
    """Teach a model your categories from boxes: fine-tune, evaluate beside the box, export."""
    from boxmask.training.finetune import FinetuneRequest
    from boxmask.training.finetune import finetune as run_finetune

    request = FinetuneRequest(checkpoint=checkpoint, coco=coco, images=images, out=out,
                              val_coco=val_coco, val_images=val_images, iterations=iterations,
                              overrides=overrides or [], int8=int8,
                              keep_categories=keep_categories)
    try:
        result = run_finetune(request, say=console.print)
    except ConfigError as exc:
        fail(str(exc))
    evaluation = result["evaluation"]
    if evaluation is not None:
        from rich.table import Table

        table = Table(title="box-prompted mean IoU on the validation set")
        for column in ("category", "had masks", "instances", "mask", "box", "over the box"):
            table.add_column(column)
        for c in evaluation["by_category"]:
            iou, box = c["mean_iou"], c["box_mean_iou"]
            table.add_row(c["name"], "yes" if c["had_masks"] else "no", str(c["instances"]),
                          "-" if iou is None else f"{iou:.3f}", "-" if box is None else f"{box:.3f}",
                          "-" if iou is None or box is None else f"{iou - box:+.3f}")
        console.print(table)
    console.print(f"[green]done[/]: {result['iterations']} iterations; the model is in "
                  f"{result['model_dir']}")
    console.print(f"serve it: boxmask serve --model-dir {result['model_dir']}")


@app.command("label")
def label(
    coco: Path = typer.Option(..., "--coco", help="Input COCO instances JSON with boxes (never modified)."),
    images: Path = typer.Option(..., "--images", help="Folder the images' file_name paths are relative to."),
    out: Path = typer.Option(..., "--out", help="Output COCO JSON (written atomically; a report goes beside it)."),
    model: str | None = typer.Option(None, "--model", help="Exported model directory, or a bundled model's name (synthetic-demo; the default)."),
    mask_format: str = typer.Option("rle", "--format", help="Mask encoding: rle or polygon."),
    only_missing: bool = typer.Option(False, "--only-missing", help="Only annotations without a segmentation."),
    min_score: float = typer.Option(0.0, "--min-score", help="Do not write masks scored below this."),
    workers: int | None = typer.Option(None, "--workers", help="Images labeled at once (local) or model actors (ray); default: CPU cores."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its journal."),
    label_map: Path | None = typer.Option(None, "--label-map", help="YAML/JSON: dataset category name -> model category name (or null)."),
    engine: str = typer.Option("local", "--engine", help="local, or ray (a Ray Data pipeline; RAY_ADDRESS for a cluster)."),
    pre_annotate: bool = typer.Option(False, "--pre-annotate", help="Run the detector on images that have no box."),
    detect_threshold: float = typer.Option(0.5, "--detect-threshold", help="Score threshold for --pre-annotate."),
    batch_boxes: int = typer.Option(0, "--batch-boxes", help="At most this many boxes per decoder call (0: as many as --batch-mb allows)."),
    batch_mb: float | None = typer.Option(None, "--batch-mb", help="Decoder memory budget per image being labeled, in MiB, which sets the boxes per decoder call (default 256; 0: no budget, all boxes of an image at once)."),
    tight_boxes: bool = typer.Option(False, "--tight-boxes", help="Also write each mask's tight box (boxmask.tight_bbox, COCO [x, y, w, h] around its pixels) beside the annotation's bbox, which is kept."),
    images_per_batch: int = typer.Option(4, "--images-per-batch", help="Images per Ray Data batch (--engine ray)."),
    precision: str = typer.Option("fp32", "--precision", help="Runtime precision: fp32, int8 (CPU) or fp16 (GPU)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Add class-specific masks to the boxes of a COCO dataset (resumable, atomic, Ray-ready)."""
    import math
    import os

    from boxmask.labeling import JournalError, LabelOptions, LabelSettings, run_label_job
    from boxmask.labeling.report import nothing_labeled, print_summary
    from boxmask.runtime.errors import ModelDirError

    # Unset: LabelSettings' default budget, stated once.
    budget = {} if batch_mb is None else {"batch_bytes": math.ceil(batch_mb * (1 << 20))}
    try:
        options = LabelOptions(
            coco=coco, images=images, out=out, model=model,
            settings=LabelSettings(mask_format=mask_format, min_score=min_score,
                                   batch_boxes=batch_boxes, detect_threshold=detect_threshold,
                                   tight_boxes=tight_boxes, **budget),
            only_missing=only_missing, pre_annotate=pre_annotate, label_map=label_map,
            resume=resume, engine=engine, workers=workers or os.cpu_count() or 1,
            images_per_batch=images_per_batch,
            precision=precision, progress=progress)
        report = run_label_job(options, console)
    except (ConfigError, JournalError, ModelDirError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; finished images are in the journal: rerun with --resume", code=130)
    print_summary(report, console)
    problem = nothing_labeled(report)
    if problem:
        # A run that labeled nothing is a failure a script must see, not an empty success.
        console.print(f"[bold red]error:[/] {problem}", soft_wrap=True)
        raise typer.Exit(1)


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    model_dir: str | None = typer.Option(
        None, "--model-dir", help="Exported model directory, a folder of them, or a bundled "
        "model's name (default: BOXMASK_MODEL_DIR, else the models bundled with the package)."),
    model: str | None = typer.Option(None, "--model", help="Default model name (the card's name)."),
    workers: int = typer.Option(1, "--workers", help="Server processes; each loads the models and its own cache."),
    triton_url: str | None = typer.Option(None, "--triton-url", help="Use a Triton server (host:port, grpc://host:port)."),
    cache_mb: int | None = typer.Option(None, "--cache-mb", help="Encoder cache budget per model, in MB."),
    max_concurrency: int | None = typer.Option(None, "--max-concurrency", help="Requests computing at once."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    plain_logs: bool = typer.Option(False, "--plain-logs", help="Human-readable logs instead of JSON lines."),
) -> None:
    """Serve the HTTP API and the demo page (FastAPI + uvicorn; no torch needed).

    Every setting can also come from the environment (BOXMASK_API_TOKEN, BOXMASK_MAX_BOXES, ...):
    see boxmask/server/settings.py. Options given here win over the environment.
    """
    import os

    try:
        import uvicorn

        from boxmask.server.logs import logging_config
        from boxmask.server.settings import ServerSettings
    except ImportError as exc:
        fail(f"the server needs its extra: pip install 'boxmask[server]' ({exc})")
    from boxmask.runtime.errors import ModelDirError
    from boxmask.runtime.model_source import resolve_model_root

    # The same resolver as every command's (a bundled name or a folder); a folder without a
    # model fails here, in one line, rather than as a server that answers 503 to everything.
    try:
        root = resolve_model_root(model_dir or os.environ.get("BOXMASK_MODEL_DIR") or None)
    except ModelDirError as exc:
        fail(str(exc))
    # Options become environment variables, so that every worker process (uvicorn starts them
    # from an import string) builds the same settings in `create_app()`.
    overrides = {"MODEL_DIR": str(root.resolve()), "DEFAULT_MODEL": model,
                 "TRITON_URL": triton_url, "CACHE_BYTES": cache_mb and str(cache_mb << 20),
                 "MAX_CONCURRENCY": max_concurrency and str(max_concurrency),
                 "LOG_LEVEL": log_level, "LOG_JSON": str(not plain_logs).lower()}
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"BOXMASK_{key}"] = value
    try:
        settings = ServerSettings()
    except ValueError as exc:
        fail(f"invalid server settings: {exc}")
    console.print(f"serving on http://{host}:{port} (models from {settings.model_dir}, "
                  f"backend {settings.effective_backend})")
    if settings.api_token is None and host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[bold yellow]warning:[/] listening on {host} without a token: anyone who "
                      "can reach this port can use the API; set BOXMASK_API_TOKEN", soft_wrap=True)
    uvicorn.run("boxmask.server.app:create_app", factory=True, host=host, port=port,
                workers=workers, access_log=False,
                log_config=logging_config(settings.log_level, settings.log_json))


import_app = typer.Typer(help="Bring in weights trained elsewhere as a boxmask checkpoint.",
                         cls=_PlainFlags, no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("torchvision")
def import_torchvision(
    weights: Path = typer.Argument(..., help="A torchvision Mask R-CNN state dict, e.g. "
                                   "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth."),
    arch: str = typer.Option(..., "--arch", help="maskrcnn_resnet50_fpn or maskrcnn_resnet50_fpn_v2."),
    out: Path = typer.Option(..., "--out", help="The boxmask checkpoint to write."),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Inference setting of the model section, repeatable: "
        "model.min_size=512 (torchvision's defaults otherwise)."),
) -> None:
    """A COCO-pretrained torchvision Mask R-CNN -> a checkpoint for export, eval, init_from.

    The class-specific mask head is COCO's, with COCO's 80 category names and ids (from
    torchvision's weights metadata; nothing is downloaded). Files are read with
    torch.load(weights_only=True): a pickle holding code is refused.
    """
    from boxmask.config import parse_overrides

    try:
        model_overrides = {}
        for key, value in parse_overrides(overrides or []):
            if not key.startswith("model.") or key.count(".") != 1:
                raise ConfigError(f"--set {key}: only model.KEY settings apply to an import")
            model_overrides[key.split(".", 1)[1]] = value
        from boxmask.model.torchvision_import import ARCHS
        from boxmask.model.torchvision_import import import_torchvision as run_import

        if arch not in ARCHS:
            raise ConfigError(f"--arch {arch!r}: choose {' or '.join(ARCHS)}")
        ckpt = run_import(weights, arch, out, model_overrides)
    except ConfigError as exc:
        fail(str(exc))
    source = ckpt["source"]
    published = source["published_metrics"]
    console.print(f"[green]imported[/] {arch} ({len(ckpt['categories'])} COCO categories) "
                  f"to {out}" + (f"; published COCO val2017 AP: {published}" if published else ""))
    console.print(f"next: boxmask export {out} --out MODEL_DIR")


cvat_app = typer.Typer(help="CVAT: convert a task's boxes to masks, print a nuclio function spec.",
                       cls=_PlainFlags, no_args_is_help=True)
app.add_typer(cvat_app, name="cvat")


@cvat_app.command("boxes-to-masks")
def cvat_boxes_to_masks(
    task: int = typer.Option(..., "--task", help="CVAT task id."),
    model_dir: str = typer.Option(..., "--model-dir", envvar="BOXMASK_MODEL_DIR",
                                  help="Exported model directory, or a bundled model's name."),
    host: str | None = typer.Option(None, "--host", envvar="CVAT_HOST", help="CVAT server URL."),
    user: str | None = typer.Option(None, "--user", envvar="CVAT_USER"),
    password: str | None = typer.Option(None, "--password", envvar="CVAT_PASSWORD", hidden=True),
    token: str | None = typer.Option(None, "--token", envvar="CVAT_ACCESS_TOKEN", hidden=True),
    polygons: bool = typer.Option(False, "--polygons", help="Upload polygons instead of masks."),
    delete_boxes: bool = typer.Option(False, "--delete-boxes/--keep-boxes",
                                      help="Delete each rectangle once its mask is uploaded."),
    journal: Path | None = typer.Option(None, "--journal",
                                           help="Resume file (default: .boxmask-cvat-task<ID>.jsonl)."),
    dry_run: Path | None = typer.Option(None, "--dry-run",
                                           help="Upload nothing; write a COCO instances file here."),
    label_map: str | None = typer.Option(None, "--label-map",
                                            help='JSON: CVAT label -> model category, e.g. \'{"Car": "car"}\'.'),
    triton_url: str | None = typer.Option(None, "--triton-url", envvar="BOXMASK_TRITON_URL"),
) -> None:
    """Give every rectangle of a CVAT task a class-specific mask (resumable)."""
    import json

    from boxmask.integrations.cvat.boxes_to_masks import CvatTask, connect, convert_task
    from boxmask.integrations.cvat.journal import CvatJournal
    from boxmask.integrations.cvat.settings import CvatSettings
    from boxmask.journal import JournalError
    from boxmask.runtime.errors import RuntimeInputError
    from boxmask.runtime.model_source import resolve_model_dir

    try:
        mapping = json.loads(label_map) if label_map else None
        settings = CvatSettings(model_dir=str(resolve_model_dir(model_dir)), triton_url=triton_url)
        predictor = settings.load_predictor()
        client = connect(host, user, password, token)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    with client:
        cvat_task = CvatTask(client.tasks.retrieve(task))
        try:
            with CvatJournal.open(journal or Path(f".boxmask-cvat-task{task}.jsonl"), task) as progress:
                summary = convert_task(cvat_task, predictor, polygons=polygons,
                                       delete_boxes=delete_boxes, journal=progress,
                                       dry_run=dry_run is not None, label_map=mapping,
                                       on_frame=lambda i, n: console.print(f"frame {i + 1}/{n}", end="\r"))
        except (RuntimeInputError, JournalError) as exc:
            fail(str(exc))
    if dry_run is not None:
        dry_run.write_text(json.dumps(summary.coco))
        console.print(f"[green]wrote[/] {dry_run} (import into CVAT as COCO 1.0)")
    summary.coco = None
    console.print_json(data=vars(summary))


@cvat_app.command("spec")
def cvat_spec(model_dir: str | None = typer.Option(None, "--model-dir", help="Exported model directory, or a bundled model's name (default: the bundled demo model).")) -> None:
    """Print the `spec` annotation (metadata.annotations.spec) of deploy/cvat/detector/function.yaml for a model."""
    import json

    from boxmask.integrations.cvat.serverless import function_spec

    print(json.dumps(function_spec(_model_card(model_dir)), indent=2))


def _model_card(model: str | None):  # type: ignore[no-untyped-def]
    """The card of the model ``model`` names (`boxmask.runtime.model_source`), or a one-line
    error."""
    from boxmask.runtime import ModelCard, ModelDirError
    from boxmask.runtime.model_source import resolve_model_dir

    try:
        return ModelCard.load(resolve_model_dir(model), verify=False)
    except ModelDirError as exc:
        fail(str(exc))


labelstudio_app = typer.Typer(help="Label Studio: a labelling config for a model; roll back a project's model version.",
                              cls=_PlainFlags, no_args_is_help=True)
app.add_typer(labelstudio_app, name="labelstudio")


@labelstudio_app.command("config")
def labelstudio_config(model_dir: str | None = typer.Option(None, "--model-dir", help="Exported model directory, or a bundled model's name (default: the bundled demo model).")) -> None:
    """Print a Label Studio labelling config (smart boxes + brush masks) with the model's categories."""
    from boxmask.integrations.labelstudio.config import labeling_config

    print(labeling_config(list(_model_card(model_dir).names)), end="")


@labelstudio_app.command("rollback")
def labelstudio_rollback(
    project: str = typer.Option(..., "--project", help="The Label Studio project id."),
    to: str | None = typer.Option(None, "--to", help="A version's name, or `base` for the base model (default: the version promoted before the served one)."),
    url: str | None = typer.Option(None, "--url", help="The running boxmask server, e.g. http://localhost:9090: it swaps at once."),
    token: str | None = typer.Option(None, "--token", envvar="BOXMASK_API_TOKEN", help="The server's token (default: BOXMASK_API_TOKEN)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="BOXMASK_LABELSTUDIO_DATA_DIR of a stopped server: it serves the version when it starts."),
) -> None:
    """Serve a Label Studio project an earlier model version (the last three are kept)."""
    if (url is None) == (data_dir is None):
        fail("give --url (a running server) or --data-dir (a stopped one's data folder)")
    if url is not None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"project": project, **({"to": to} if to else {})}
        try:
            response = httpx.post(f"{url.rstrip('/')}/labelstudio/rollback", json=body,
                                  headers=headers, timeout=300)
        except httpx.HTTPError as exc:
            fail(f"cannot reach {url}: {exc}")
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            fail(f"{url} answered {response.status_code}: {message}")
        answer = response.json()
        console.print(f"project {answer['project']} is served {answer['served']} "
                      f"(model_version {answer['model_version']})", highlight=False)
        return
    from boxmask.integrations.labelstudio.store import ROLLED_BACK, ProjectStore
    from boxmask.integrations.labelstudio.training import (
        BASE,
        OwnerLock,
        TrainingError,
        rollback_target,
    )

    assert data_dir is not None
    root = data_dir / "labelstudio"
    if not (root / "projects" / project / "store.sqlite").is_file():
        fail(f"{data_dir} holds no Label Studio project {project!r}")
    try:
        owner = OwnerLock(root)
    except TrainingError:
        fail(f"a server is running on {data_dir}: roll back through it with --url")
    try:
        store = ProjectStore(root / "projects" / project, project)
        try:
            target = rollback_target(store, to)
        except TrainingError as exc:
            fail(str(exc))
        store.serve(target.name if target is not None else None, ROLLED_BACK)
        store.close()
    finally:
        owner.release()
    console.print(f"project {project} will be served {target.name if target else BASE} when "
                  "the server starts", highlight=False)


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
