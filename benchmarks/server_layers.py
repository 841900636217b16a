"""Where a cached /v1/segment request spends its time inside the server, layer by layer.

    python benchmarks/server_layers.py --model-dir runs/peers/boxmask-r50-v1 --precision int8 \
        --photos --label person
    python benchmarks/server_layers.py                  # the bundled demo model

The app (`create_app`, the server's settings from the environment plus the options here) is
driven in this process through its ASGI callable, without a socket: an image is uploaded, then
one cached box (its label given) is asked for `--requests` times: the image and the box of
benchmarks/server.py's cached single box (a 512-px scene, or with --photos scikit-image's
astronaut), so the two benchmarks time the same request. A clock reading is taken at
the entry and exit of every middleware of the app's stack, of the router, and of the calls the
route makes in turn (the body's validation, the box policy, the inference slot, the decoder
call and, inside it, the review statistics, then each mask's paste and RLE); the table gives,
for each step between two readings, its median and mean over the requests, in milliseconds.
A row "to X" is the time from the reading before to X's entry, "out of X" from the reading
before to X's exit: "to review_boxes" holds the decoder's ONNX Runtime call (the predictor's
work before its review statistics).
What is not here: HTTP parsing, the socket and the client (`benchmarks/server.py` times the
whole request over HTTP beside the bare decoder call).

The probes wrap functions by name (`STEPS`): a step whose function was renamed or removed is
reported as missing, and the script fails, rather than silently timing less.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from harness import markdown_table, write_json
from server import boxes, sample_images

#: (module, attribute, is a coroutine function): the calls timed inside the route, outermost
#: first. A class attribute is given as "Class.method".
STEPS: list[tuple[str, str, bool]] = [
    ("boxmask.server.routers.segment", "read_image_request", True),
    ("boxmask.server.routers.segment", "_arriving_boxes", False),
    ("boxmask.server.routers.segment", "run_inference", True),
    ("boxmask.server.inference", "segment", False),
    ("boxmask.runtime.predictor", "Predictor.predict", False),
    ("boxmask.runtime.predictor", "review_boxes", False),
    ("boxmask.server.inference", "instances", False),
    ("boxmask.runtime.predictor", "Prediction.cropped_mask", False),
    ("boxmask.server.inference", "wire_mask", False),
]

Event = tuple[str, str, float]  # (name, "in" | "out", perf_counter)


class _Clock:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def mark(self, name: str, edge: str) -> None:
        self.events.append((name, edge, time.perf_counter()))


class _LayerProbe:
    """An ASGI layer wrapped: the clock read on its way in and out."""

    def __init__(self, app: Any, name: str, clock: _Clock) -> None:
        self.app, self.name, self.clock = app, name, clock

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.clock.mark(self.name, "in")
        try:
            await self.app(scope, receive, send)
        finally:
            self.clock.mark(self.name, "out")


def _wrap(owner: Any, attr: str, name: str, is_async: bool, clock: _Clock
          ) -> Callable[[], None]:
    """Wrap `owner.attr`; the call that puts it back."""
    fn = getattr(owner, attr)
    if is_async:
        @functools.wraps(fn)
        async def probe(*args: Any, **kwargs: Any) -> Any:
            clock.mark(name, "in")
            try:
                return await fn(*args, **kwargs)
            finally:
                clock.mark(name, "out")
    else:
        @functools.wraps(fn)
        def probe(*args: Any, **kwargs: Any) -> Any:
            clock.mark(name, "in")
            try:
                return fn(*args, **kwargs)
            finally:
                clock.mark(name, "out")
    setattr(owner, attr, probe)
    return lambda: setattr(owner, attr, fn)


def install_probes(clock: _Clock) -> tuple[list[str], Callable[[], None]]:
    """Wrap every function of `STEPS`: the names that could not be found, and the call that
    unwraps them all."""
    import importlib

    missing: list[str] = []
    undo: list[Callable[[], None]] = []
    for module_name, attr, is_async in STEPS:
        owner: Any = importlib.import_module(module_name)
        *path, leaf = attr.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if owner is None or not callable(getattr(owner, leaf, None)):
            missing.append(f"{module_name}.{attr}")
            continue
        undo.append(_wrap(owner, leaf, attr, is_async, clock))

    def restore() -> None:
        for put_back in reversed(undo):
            put_back()

    return missing, restore


def wrap_stack(app: Any, clock: _Clock) -> list[str]:
    """Probe each layer of the app's middleware stack down to its router: their names."""
    app.middleware_stack = app.build_middleware_stack()
    holder, attr, names = app, "middleware_stack", []
    while True:
        layer = getattr(holder, attr)
        name = type(layer).__name__
        setattr(holder, attr, _LayerProbe(layer, name, clock))
        names.append(name)
        if layer is app.router or not hasattr(layer, "app"):
            return names
        holder, attr = layer, "app"


async def asgi_call(app: Any, method: str, path: str, body: bytes, content_type: str
                    ) -> tuple[int, bytes]:
    """One request through the app's ASGI callable, without a socket."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", content_type.encode()),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    sent = False
    out: list[dict] = []

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        out.append(message)

    await app(scope, receive, send)
    return out[0]["status"], b"".join(m.get("body", b"") for m in out[1:])


def steps_of(events: list[Event], start: float, end: float) -> list[tuple[str, float]]:
    """Each step between consecutive readings: ('-> in X' or '-> out X', seconds)."""
    steps, prev = [], start
    for name, edge, t in events:
        steps.append((f"{'to' if edge == 'in' else 'out of'} {name}", t - prev))
        prev = t
    steps.append(("back to the caller", end - prev))
    return steps


async def measure(requests: int, warmup: int, settings_overrides: dict[str, Any],
                  label: str | None, box: list[float] | None, photos: bool = False
                  ) -> dict[str, Any]:
    from boxmask.server.app import create_app
    from boxmask.server.settings import ServerSettings

    clock = _Clock()
    missing, restore = install_probes(clock)
    try:
        if missing:
            raise SystemExit(f"functions timed by this benchmark are gone: "
                             f"{', '.join(missing)} (update STEPS)")
        return await _measure(clock, create_app(ServerSettings(**settings_overrides)),
                              requests, warmup, label, box, photos)
    finally:
        restore()


async def _measure(clock: _Clock, app: Any, requests: int, warmup: int, label: str | None,
                   box: list[float] | None, photos: bool) -> dict[str, Any]:
    layers = wrap_stack(app, clock)
    async with app.router.lifespan_context(app):
        png, (h, w) = sample_images(photos, 512, 1)[0]
        status, data = await asgi_call(app, "POST", "/v1/images", png, "image/png")
        if status != 200:
            raise SystemExit(f"upload failed: {status} {data[:300]!r}")
        status, models = await asgi_call(app, "GET", "/v1/models", b"", "application/json")
        card = json.loads(models)["models"][0]
        label = label or card["categories"][0]["name"]
        box = box or boxes(min(h, w), 1, 1)[0]
        body = json.dumps({"image_id": json.loads(data)["image_id"], "boxes": [box],
                           "labels": [label]}).encode()
        per_step: dict[tuple[int, str], list[float]] = {}
        totals = []
        for i in range(warmup + requests):
            clock.events.clear()
            start = time.perf_counter()
            status, answer = await asgi_call(app, "POST", "/v1/segment", body, "application/json")
            end = time.perf_counter()
            if status != 200:
                raise SystemExit(f"segment failed: {status} {answer[:300]!r}")
            if i < warmup:
                continue
            totals.append(end - start)
            for k, (name, seconds) in enumerate(steps_of(clock.events, start, end)):
                per_step.setdefault((k, name), []).append(seconds)
    return {"model": card["name"], "layers": layers, "box": box, "label": label,
            "requests": requests, "total_ms": _stats(totals),
            "steps": [{"step": name, **_stats(v)} for (_, name), v in sorted(per_step.items())]}


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.median(ms)), "mean_ms": float(ms.mean())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default=None, help="What to serve (default: the server's).")
    p.add_argument("--precision", choices=["fp32", "int8"], default=None)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--inline-boxes", type=int, default=None,
                   help="BOXMASK_INLINE_BOXES (default: the server's).")
    p.add_argument("--photos", action="store_true",
                   help="scikit-image's astronaut instead of a synthetic 512-px scene.")
    p.add_argument("--label", default=None, help="The box's label (default: the first category).")
    p.add_argument("--box", type=float, nargs=4, default=None, metavar=("X1", "Y1", "X2", "Y2"))
    p.add_argument("--json", type=Path, help="Also write the results here.")
    args = p.parse_args(argv)

    overrides: dict[str, Any] = {"caller_mask_pixels_per_minute": 0, "log_level": "warning"}
    for key, value in (("model_dir", args.model_dir), ("precision", args.precision),
                       ("inline_boxes", args.inline_boxes)):
        if value is not None:
            overrides[key] = value
    results = asyncio.run(measure(args.requests, args.warmup, overrides, args.label, args.box,
                                  args.photos))
    print(f"model {results['model']}, box {np.round(results['box'], 1).tolist()} "
          f"({results['label']}), {results['requests']} cached requests in process")
    print("layers: " + " > ".join(results["layers"]))
    print(markdown_table(["step (from the previous reading)", "p50 ms", "mean ms"],
                         [[s["step"], f"{s['p50_ms']:.3f}", f"{s['mean_ms']:.3f}"]
                          for s in results["steps"]]
                         + [["whole request", f"{results['total_ms']['p50_ms']:.3f}",
                             f"{results['total_ms']['mean_ms']:.3f}"]], align="lrr"))
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
