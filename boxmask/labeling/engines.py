"""The two ways to run a labeling job over its image tasks.

Both hand each finished image's result to ``on_result`` (which journals it) and both produce a
result with `boxmask.labeling.image_labeler.label_image`, so their outputs are identical.

- local: one `Predictor` in this process; a thread pool reads and decodes the next images
  while the model works on the current one.
- ray: a Ray Data pipeline. ``from_items`` over the image tasks, ``map_batches`` with an actor
  class that holds a `Predictor` (an `ActorPoolStrategy` of ``workers`` actors), batches of
  images; results stream back to this process as they finish. On a cluster (``RAY_ADDRESS``
  set, or ``ray.init`` called before), the images folder and the model directory must be
  readable at the same paths on every node.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from boxmask.labeling.image_labeler import label_image
from boxmask.labeling.image_reader import ImageSkip, prefetch, read_image
from boxmask.labeling.options import LabelSettings
from boxmask.labeling.plan import ImageTask
from boxmask.runtime.options import PredictorOptions

ResultSink = Callable[[dict[str, Any]], None]

# Encoder features of the images being labeled must fit (R50-FPN at 800x1333: about 100 MB
# each); an image is never asked for again once its boxes are done.
PREDICTOR_CACHE_BYTES_PER_IMAGE = 128 << 20


def batch_predictor_options(precision: str = "fp32", threads: int | None = None,
                            concurrent_images: int = 1, batch_bytes: int = 0) -> PredictorOptions:
    """The options of a predictor for batch work: ONNX Runtime `threads` per run (None: its
    default), a cache for the `concurrent_images` being labeled, and `batch_bytes`
    (`LabelSettings.batch_bytes`, 0 for none) as its decoder's memory budget. No limits: a
    dataset's image has as many boxes as it has."""
    return PredictorOptions(precision=precision,  # type: ignore[arg-type]
                            intra_op_threads=threads,
                            cache_bytes=PREDICTOR_CACHE_BYTES_PER_IMAGE * (concurrent_images + 1),
                            decoder_budget_bytes=batch_bytes or None)


def load_predictor(model_dir: str | Path, options: PredictorOptions | None = None,
                   **batch: Any):
    """A runtime `Predictor` for batch work: `options`, else `batch_predictor_options(**batch)`."""
    from boxmask.runtime import Predictor

    return Predictor.from_dir(model_dir, options or batch_predictor_options(**batch))


def _read(task: ImageTask) -> np.ndarray | ImageSkip:
    if not task.path:
        return ImageSkip("outside_images", f"file_name {task.file_name!r} is absolute or leads "
                                           "out of --images; it is not read")
    return read_image(task.path, task.height, task.width)


def run_local(predictor: Any, tasks: Sequence[ImageTask], settings: LabelSettings,
              on_result: ResultSink, workers: int = 2) -> None:
    """Label `tasks` in this process: `workers` threads read images ahead, and `workers`
    threads label images concurrently; results are handed on in input order.

    Whole images in parallel, each on one ONNX Runtime thread (`local_predictor_threads`),
    use the cores better than one image at a time on several threads: the small convolutions
    of the later FPN levels and the mask pasting and encoding do not split well across cores.
    """
    images = prefetch(tasks, _read, workers=workers)
    labeled = prefetch(images, lambda item: label_image(predictor, item[1], item[0], settings),
                       workers=workers)
    for _, result in labeled:
        on_result(result)


def local_predictor_threads(workers: int) -> int | None:
    """ONNX Runtime threads per run for the local engine: one when images run in parallel,
    the runtime's default (all cores) for a single labeling thread."""
    return 1 if workers > 1 else None


class RayImageLabeler:
    """The Ray Data actor: loads the model once, labels a batch of image tasks per call.

    Batch in: ``{"task": [json text of an ImageTask, ...]}``; batch out: ``{"index": int64[B],
    "result": [json text of a result, ...]}``. JSON text keeps Arrow from guessing types for the
    nested, ragged results.
    """

    def __init__(self, model_dir: str, settings: dict[str, Any],
                 options: PredictorOptions) -> None:
        self.settings = LabelSettings(**settings)
        self.predictor = load_predictor(model_dir, options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tasks = [ImageTask.from_dict(json.loads(t)) for t in batch["task"]]
        results = [label_image(self.predictor, image, task, self.settings)
                   for task, image in prefetch(tasks, _read, workers=2)]
        return {"index": np.array([r["index"] for r in results], dtype=np.int64),
                "result": np.array([json.dumps(r) for r in results], dtype=object)}


def require_ray() -> None:
    """Raise `ConfigError` (before any work starts) if Ray Data cannot be imported."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        from boxmask.config import ConfigError

        raise ConfigError("--engine ray needs Ray Data: pip install 'boxmask[labeling]'") from None


def run_ray(model_dir: str | Path, tasks: Sequence[ImageTask], settings: LabelSettings,
            on_result: ResultSink, options: PredictorOptions, workers: int = 2,
            images_per_batch: int = 4) -> None:
    """Label `tasks` with a pool of `workers` Ray actors, `images_per_batch` images per call,
    each actor's predictor made with `options`.

    Starts a local Ray (no dashboard) unless Ray is already initialised or ``RAY_ADDRESS``
    points at a cluster.
    """
    if not tasks:
        return
    require_ray()
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours shows images/s and the ETA
    # Ray Data logs each execution's plan at INFO; keep the terminal for the progress bar.
    logging.getLogger("ray.data").setLevel(logging.ERROR)

    ds: ray.data.Dataset = ray.data.from_items([{"task": json.dumps(t.to_dict())} for t in tasks])
    ds = ds.map_batches(
        RayImageLabeler,
        fn_constructor_kwargs={"model_dir": str(Path(model_dir).resolve()),
                               "settings": settings.to_dict(), "options": options},
        batch_size=images_per_batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
    )
    for row in ds.iter_rows():
        on_result(json.loads(row["result"]))
