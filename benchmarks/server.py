"""Latency, throughput and memory of a live boxmask server.

    python benchmarks/server.py --start --model-dir boxmask/assets/models      # start one
    python benchmarks/server.py --url http://127.0.0.1:8000 --pid 1234         # or measure one

Measures, each bounded in count or duration:
  * a first (uncached) request: /v1/segment with a new image each time (encoder + decoder);
  * encoding on upload: POST /v1/images of a new image (the encoder runs while the user draws
    the first box), then that first box by image_id;
  * a cached single box: /v1/segment by image_id with one box and its label (decoder only: the
    labelled decoder where the model has one), the same box asking for its class score
    (`class_scores`: the full decoder), and the same box without a label (full decoder);
  * ten boxes on a cached image, in one request;
  * sustained requests per second of cached single boxes from several client threads, with
    the number of errors (the target is zero);
  * the server's RSS over the whole run (sampled from /proc, so --pid or --start is needed).
Prints a table; --json writes the numbers too.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def scene_png(size: int, seed: int) -> bytes:
    """A textured image with a few filled shapes: realistic enough for the encoder's cost."""
    rng = np.random.default_rng(seed)
    a = (rng.random((size, size, 3)) * 80).astype(np.uint8)
    for _ in range(6):
        x, y = rng.integers(0, size - size // 4, 2)
        w, h = rng.integers(size // 10, size // 4, 2)
        a[y:y + h, x:x + w] = rng.integers(100, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def boxes(size: int, n: int, seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x, y = rng.uniform(0, size * 0.6, 2)
        w, h = rng.uniform(size * 0.1, size * 0.35, 2)
        out.append([round(x, 1), round(y, 1), round(x + w, 1), round(y + h, 1)])
    return out


def _images(photos: bool, size: int, count: int, salt: int = 0) -> list[tuple[bytes, tuple[int, int]]]:
    """``count`` different PNGs and their (h, w): synthetic scenes, or scikit-image's photos
    (each a new image: a one-pixel change per repeat, so the server's cache never hits)."""
    if not photos:
        return [(scene_png(size, 1000 + 100 * salt + i), (size, size)) for i in range(count)]
    from skimage import data

    base = [np.ascontiguousarray(getattr(data, n)()[..., :3])
            for n in ("astronaut", "coffee", "chelsea", "rocket")]
    out = []
    for i in range(count):
        a = base[i % len(base)].copy()
        a[0, 0] = (i + 7 * salt) % 256, i // 256, 255 - salt
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        out.append((buf.getvalue(), a.shape[:2]))
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    def __init__(self, pid: int | None, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while self.pid is not None and not self.stop.is_set():
            try:
                self.samples.append((time.monotonic() - self.t0, rss_mb(self.pid)))
            except OSError:
                return
            self.stop.wait(self.every_s)


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def timed(http: httpx.Client, body: dict) -> float:
    start = time.perf_counter()
    r = http.post("/v1/segment", json=body)
    elapsed = (time.perf_counter() - start) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"segment failed: {r.status_code} {r.text[:300]}")
    return elapsed


def sustained(url: str, body: dict, threads: int, seconds: float) -> dict[str, float]:
    ok = errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker() -> None:
        nonlocal ok, errors
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.monotonic() < stop:
                try:
                    good = http.post("/v1/segment", json=body).status_code == 200
                except httpx.HTTPError:
                    good = False
                with lock:
                    ok += good
                    errors += not good

    start = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - start
    return {"requests": ok + errors, "errors": errors, "rps": ok / elapsed, "threads": threads,
            "seconds": elapsed}


def start_server(model_dir: str, cache_mb: int, extra_env: dict[str, str] | None = None
                 ) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOXMASK_")}
    # Enough queue for the load threads: this measures speed, not the overload answer.
    env["BOXMASK_MAX_QUEUE"] = "64"
    env.update(extra_env or {})
    proc = subprocess.Popen([sys.executable, "-m", "boxmask.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--model-dir", model_dir,
                             "--cache-mb", str(cache_mb), "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not become ready in 180 s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="A running server (else --start).")
    p.add_argument("--pid", type=int, help="Its process id, for RSS.")
    p.add_argument("--start", action="store_true", help="Start `boxmask serve` for the run.")
    p.add_argument("--model-dir", default=None, help="With --start (default: bundled models).")
    p.add_argument("--cache-mb", type=int, default=512)
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--uncached", type=int, default=10, help="First requests, each a new image.")
    p.add_argument("--cached", type=int, default=200, help="Cached single-box requests.")
    p.add_argument("--ten", type=int, default=100, help="Cached ten-box requests.")
    p.add_argument("--threads", type=int, default=4, help="Client threads for the sustained run.")
    p.add_argument("--seconds", type=float, default=20.0, help="Duration of the sustained run.")
    p.add_argument("--json", type=Path, help="Also write the results here.")
    p.add_argument("--precision", choices=["fp32", "int8"], default=None,
                   help="With --start: the graphs to serve (default: the server's, fp32).")
    p.add_argument("--input-min-size", type=int, default=None,
                   help="With --start: the encoder's shorter side (default: the card's).")
    p.add_argument("--server-threads", type=int, default=None,
                   help="With --start: ONNX Runtime threads per session (default: one per core).")
    p.add_argument("--photos", action="store_true",
                   help="Use scikit-image's sample photos (astronaut, coffee, chelsea, ...) at "
                        "their own sizes instead of synthetic --image-size scenes.")
    args = p.parse_args()

    proc = None
    if args.start:
        model_dir = args.model_dir or str(Path(__file__).resolve().parents[1] / "boxmask/assets/models")
        extra = {k: str(v) for k, v in (("BOXMASK_PRECISION", args.precision),
                                        ("BOXMASK_INPUT_MIN_SIZE", args.input_min_size),
                                        ("BOXMASK_THREADS", args.server_threads))
                 if v is not None}
        proc, url = start_server(model_dir, args.cache_mb, extra)
        pid = proc.pid
    elif args.url:
        url, pid = args.url.rstrip("/"), args.pid
    else:
        p.error("give --url (and --pid) or --start")
    sampler = RssSampler(pid)
    sampler.start()
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            model = http.get("/v1/models").json()
            label = model["models"][0]["categories"][0]["name"]
            size = args.image_size
            images = _images(args.photos, size, args.uncached)
            first = [timed(http, {"image": base64.b64encode(png).decode(),
                                  "boxes": boxes(min(hw), 1, i), "labels": [label]})
                     for i, (png, hw) in enumerate(images)]
            upload, after_upload = [], []
            for i, (png, hw) in enumerate(_images(args.photos, size, args.uncached, salt=1)):
                start = time.perf_counter()
                up = http.post("/v1/images", content=png, headers={"content-type": "image/png"})
                upload.append((time.perf_counter() - start) * 1000)
                after_upload.append(timed(http, {"image_id": up.json()["image_id"],
                                                 "boxes": boxes(min(hw), 1, i), "labels": [label]}))
            png, hw = images[0]
            up = http.post("/v1/images", content=png, headers={"content-type": "image/png"})
            image_id = up.json()["image_id"]
            side = min(hw)
            one = {"image_id": image_id, "boxes": boxes(side, 1, 1), "labels": [label]}
            one_scored = {**one, "class_scores": True}
            one_unlabelled = {"image_id": image_id, "boxes": one["boxes"]}
            ten = {"image_id": image_id, "boxes": boxes(side, 10, 2), "labels": [label] * 10}
            for _ in range(5):  # warm-up: first calls pay for lazy allocations
                for body in (one, one_scored, one_unlabelled, ten):
                    timed(http, body)
            single = [timed(http, one) for _ in range(args.cached)]
            scored = [timed(http, one_scored) for _ in range(max(args.cached // 2, 1))]
            unlabelled = [timed(http, one_unlabelled) for _ in range(max(args.cached // 2, 1))]
            multi = [timed(http, ten) for _ in range(args.ten)]
        load = sustained(url, one, args.threads, args.seconds)
    finally:
        sampler.stop.set()
        sampler.join()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)

    results = {"model": model["models"][0]["name"], "image_size": args.image_size,
               "precision": args.precision, "input_min_size": args.input_min_size,
               "images": "photos" if args.photos else f"{args.image_size}px scenes",
               "uncached_single_box_ms": percentiles(first),
               "upload_ms": percentiles(upload),
               "first_box_after_upload_ms": percentiles(after_upload),
               "cached_single_box_ms": percentiles(single),
               "cached_single_box_class_score_ms": percentiles(scored),
               "cached_single_box_no_label_ms": percentiles(unlabelled),
               "cached_ten_boxes_ms": percentiles(multi), "sustained": load,
               "rss_mb": {"samples": len(sampler.samples),
                          "start": sampler.samples[0][1] if sampler.samples else None,
                          "max": max((s[1] for s in sampler.samples), default=None),
                          "end": sampler.samples[-1][1] if sampler.samples else None}}
    print(f"\nboxmask server benchmark: model {results['model']!r}, {results['images']}, "
          f"precision {args.precision or 'server default'}, input min size "
          f"{args.input_min_size or 'the card'}, {url}")
    print("| case | n | p50 ms | p95 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, key in (("first request (uncached)", "uncached_single_box_ms"),
                      ("upload (POST /v1/images: encoder)", "upload_ms"),
                      ("first box after upload", "first_box_after_upload_ms"),
                      ("cached, 1 box", "cached_single_box_ms"),
                      ("cached, 1 box, class_scores", "cached_single_box_class_score_ms"),
                      ("cached, 1 box, no label", "cached_single_box_no_label_ms"),
                      ("cached, 10 boxes", "cached_ten_boxes_ms")):
        r = results[key]
        print(f"| {name} | {r['n']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} |")
    print(f"sustained, 1 box, {load['threads']} threads: {load['rps']:.1f} req/s over "
          f"{load['seconds']:.1f} s, {load['requests']} requests, {load['errors']} errors")
    rss = results["rss_mb"]
    if rss["samples"]:
        print(f"server RSS: {rss['start']:.0f} MB at start, {rss['max']:.0f} MB max, "
              f"{rss['end']:.0f} MB at end ({rss['samples']} samples)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
