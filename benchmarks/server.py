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
  * the server's RSS over the whole run (sampled from /proc, so --pid or --start is needed);
  * beside the cached 1- and 10-box requests, the same work without the server: the bare
    decoder call (`Predictor.predict` in this process on the same image's cached encoding,
    same boxes and labels, same graphs, precision, threads and spinning as the server), and
    that call with its masks pasted and RLE-encoded; measured in alternating blocks with the
    HTTP requests, so that both see the same load, and the server's overhead (HTTP p50 minus
    bare p50) and CPU time per request printed beside them. Needs the model's folder here
    (--start, or --model-dir with --url); --no-bare skips it.
The timed requests go over one keep-alive connection of a minimal HTTP/1.1 client (`Connection`).
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
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from harness import write_json
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


def sample_images(photos: bool, size: int, count: int, salt: int = 0
                  ) -> list[tuple[bytes, tuple[int, int]]]:
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


class Connection:
    """One keep-alive HTTP/1.1 connection for the timed requests: a request written in one
    `sendall`, the answer read by its Content-Length (or chunks). The standard library's client
    parses each answer's headers with the email package: 0.15-0.3 ms of Python a request on
    the development machine (a GET /healthz round trip 0.38 ms with it, 0.24 ms with this),
    which the timed figures would count as the server's. httpx spends more still (1.5 ms)."""

    def __init__(self, url: str, timeout: float = 120) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"expected an http://host:port URL, got {url!r}")
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = b""
        return self.sock

    def _fill(self, sock: socket.socket) -> None:
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the server closed the connection mid-answer")
        self.buffer += data

    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """POST `body`: the answer's status and body. A connection the server closed (after an
        error answer, or idle) is replaced on the next request."""
        try:
            sock = self._connect()
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                         f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
                         .encode("latin-1") + body)
            while (end := self.buffer.find(b"\r\n\r\n")) < 0:
                self._fill(sock)
            head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4:]
            status_line, *lines = head.split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines)}
            if headers.get("transfer-encoding", "").lower() == "chunked":
                data = self._chunked(sock)
            else:
                length = int(headers.get("content-length", "0"))
                while len(self.buffer) < length:
                    self._fill(sock)
                data, self.buffer = self.buffer[:length], self.buffer[length:]
            if headers.get("connection", "").lower() == "close":
                self.close()
            return status, data
        except (OSError, ValueError):
            self.close()
            raise

    def _chunked(self, sock: socket.socket) -> bytes:
        parts = []
        while True:
            while (end := self.buffer.find(b"\r\n")) < 0:
                self._fill(sock)
            size = int(self.buffer[:end].split(b";")[0], 16)
            while len(self.buffer) < end + 2 + size + 2:
                self._fill(sock)
            parts.append(self.buffer[end + 2:end + 2 + size])
            self.buffer = self.buffer[end + 2 + size + 2:]
            if size == 0:
                return b"".join(parts)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""


def timed(conn: Connection, body: dict) -> float:
    """One /v1/segment request of `body` (encoded to JSON before the clock starts): ms."""
    data = json.dumps(body).encode()
    start = time.perf_counter()
    status, text = conn.post("/v1/segment", data, "application/json")
    elapsed = (time.perf_counter() - start) * 1000
    if status != 200:
        raise RuntimeError(f"segment failed: {status} {text[:300]!r}")
    return elapsed


class BareDecoder:
    """The decoder call a cached request makes, without the server: a `Predictor` of the same
    model directory with the server's precision, threads, spinning and input size, the image
    encoded once, then `predict` of the same boxes and labels (the labelled decoder where the
    server takes it: labels given, no class scores)."""

    def __init__(self, model_dir: Path, precision: str | None, threads: int | None,
                 input_min_size: int | None, spinning: bool) -> None:
        import dataclasses

        from boxmask.runtime import Predictor, PredictorOptions

        options = {k: v for k, v in (("precision", precision), ("intra_op_threads", threads),
                                     ("input_min_size", input_min_size)) if v is not None}
        # A runtime before the option (a server of an earlier commit, timed beside this one)
        # spins, ONNX Runtime's default, in the server as here.
        if "intra_op_spinning" in {f.name for f in dataclasses.fields(PredictorOptions)}:
            options["intra_op_spinning"] = spinning
        self.predictor = Predictor.from_dir(model_dir, **options)
        self.key: str | None = None

    def set_image(self, data: bytes) -> None:
        self.key = self.predictor.set_image(data)

    def decode(self, body: dict) -> float:
        """One bare decoder call for `body`'s boxes: ms."""
        start = time.perf_counter()
        self.predictor.predict(body["boxes"], labels=body.get("labels"), key=self.key,
                               class_scores=bool(body.get("class_scores", False)))
        return (time.perf_counter() - start) * 1000

    def decode_and_encode(self, body: dict) -> float:
        """The decoder call and its masks pasted and RLE-encoded (what the runtime must do for
        the answer, without HTTP, validation or the response's JSON): ms."""
        from boxmask.runtime.masks import encode_mask

        start = time.perf_counter()
        pred = self.predictor.predict(body["boxes"], labels=body.get("labels"), key=self.key,
                                      class_scores=bool(body.get("class_scores", False)))
        # Each mask as the server pastes it for RLE: the box's pixels alone where the runtime
        # can (`cropped_mask`), else its plane (a server of an earlier commit).
        paste = getattr(pred, "cropped_mask", pred.mask)
        for i in range(len(pred)):
            encode_mask(paste(i), "rle")
        return (time.perf_counter() - start) * 1000


def served_model_dir(model_dir: str | None, name: str) -> Path | None:
    """The exported folder of the served model `name` under `model_dir` (a model folder, a
    folder of them, or a bundled name; None: the bundled models), or None when not found."""
    from boxmask.runtime.contract import BUNDLED_MODELS_DIR, card_name, find_model_dirs

    root = Path(model_dir) if model_dir is not None else BUNDLED_MODELS_DIR
    if not root.exists() and model_dir is not None and (BUNDLED_MODELS_DIR / model_dir).exists():
        root = BUNDLED_MODELS_DIR / model_dir
    return next((d for d in find_model_dirs(root) if card_name(d) == name), None)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, from /proc (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Beside:
    """Cached requests and the same work without the server, measured in one stretch."""

    http_ms: list[float] = field(default_factory=list)
    decoder_ms: list[float] = field(default_factory=list)
    with_masks_ms: list[float] = field(default_factory=list)
    # CPU time per request of the server process (all its threads), and per bare decoder call
    # of this process: less at the mercy of other jobs than wall clock on a busy machine.
    server_cpu_ms: float | None = None
    decoder_cpu_ms: float | None = None


def beside(conn: Connection, bare: BareDecoder, body: dict, count: int, pid: int | None,
           block: int = 10) -> Beside:
    """`count` HTTP requests of `body`, `count` bare decoder calls and `count` decoder calls
    with their masks encoded, in alternating blocks of `block` (the machine's load drifts: each
    kind gets its share of every stretch of it)."""
    out = Beside()
    server_cpu = decoder_cpu = 0.0
    while len(out.http_ms) < count:
        m = min(block, count - len(out.http_ms))
        start = time.process_time()
        out.decoder_ms += [bare.decode(body) for _ in range(m)]
        decoder_cpu += time.process_time() - start
        start = cpu_seconds(pid) if pid is not None else 0.0
        out.http_ms += [timed(conn, body) for _ in range(m)]
        server_cpu += (cpu_seconds(pid) - start) if pid is not None else 0.0
        out.with_masks_ms += [bare.decode_and_encode(body) for _ in range(m)]
    out.decoder_cpu_ms = decoder_cpu * 1000 / count
    out.server_cpu_ms = server_cpu * 1000 / count if pid is not None else None
    return out


def sustained(url: str, body: dict, threads: int, seconds: float) -> dict[str, float]:
    ok = errors = 0
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker() -> None:
        nonlocal ok, errors
        conn = Connection(url, timeout=30)
        data = json.dumps(body).encode()
        while time.monotonic() < stop:
            try:
                status = str(conn.post("/v1/segment", data, "application/json")[0])
            except (OSError, ValueError) as exc:
                status = type(exc).__name__
            good = status == "200"
            with lock:
                ok += good
                errors += not good
                if not good:
                    statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    start = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - start
    return {"requests": ok + errors, "errors": errors, "error_statuses": statuses,
            "rps": ok / elapsed, "threads": threads, "seconds": elapsed}


def start_server(model_dir: str, cache_mb: int, extra_env: dict[str, str] | None = None
                 ) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOXMASK_")}
    # Enough queue for the load threads: this measures speed, not the overload answer.
    env["BOXMASK_MAX_QUEUE"] = "64"
    # The per-caller mask-pixel budget bounds what one client may cost a shared server; this one
    # client is the benchmark, which would exhaust it (a 512x512 box is 0.26 Mpx: the default
    # burst and refill allow ~1,900 requests, then ~95 a second) and time 429s instead of masks.
    env["BOXMASK_CALLER_MASK_PIXELS_PER_MINUTE"] = "0"
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="A running server (else --start).")
    p.add_argument("--pid", type=int, help="Its process id, for RSS.")
    p.add_argument("--start", action="store_true", help="Start `boxmask serve` for the run.")
    p.add_argument("--model-dir", default=None,
                   help="With --start: what it serves (default: bundled models); with --url: "
                        "the served model's folder here, for the bare decoder beside it.")
    p.add_argument("--cache-mb", type=int, default=512)
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--uncached", type=int, default=10, help="First requests, each a new image.")
    p.add_argument("--cached", type=int, default=200, help="Cached single-box requests.")
    p.add_argument("--ten", type=int, default=100, help="Cached ten-box requests.")
    p.add_argument("--threads", type=int, default=4, help="Client threads for the sustained run.")
    p.add_argument("--seconds", type=float, default=20.0, help="Duration of the sustained run.")
    p.add_argument("--json", type=Path, help="Also write the results here.")
    p.add_argument("--record-in", type=Path, default=None, metavar="EVALUATION_JSON",
                   help="Also record the results, with this command, the date and the load "
                        "average, as the 'server' entry of a model's evaluation.json (written "
                        "atomically; its other entries are kept).")
    p.add_argument("--precision", choices=["fp32", "int8"], default=None,
                   help="With --start: the graphs to serve (default: the server's, fp32).")
    p.add_argument("--input-min-size", type=int, default=None,
                   help="With --start: the encoder's shorter side (default: the card's).")
    p.add_argument("--server-threads", type=int, default=None,
                   help="With --start: ONNX Runtime threads per session (default: one per core).")
    p.add_argument("--spinning", action="store_true",
                   help="ONNX Runtime's threads spin while they wait: with --start the server "
                        "gets BOXMASK_INTRA_OP_SPINNING=true (else false), and the bare decoder "
                        "follows; with --url, say what the server runs.")
    p.add_argument("--inline-boxes", type=int, default=None, metavar="N",
                   help="With --start: BOXMASK_INLINE_BOXES (cached requests of at most N "
                        "boxes decoded on the event loop; default: the server's, 1).")
    p.add_argument("--no-bare", action="store_true",
                   help="Do not time the bare decoder beside the cached requests.")
    p.add_argument("--photos", action="store_true",
                   help="Use scikit-image's sample photos (astronaut, coffee, chelsea, ...) at "
                        "their own sizes instead of synthetic --image-size scenes.")
    args = p.parse_args(argv)

    proc = None
    if args.start:
        model_dir = args.model_dir or str(Path(__file__).resolve().parents[1] / "boxmask/assets/models")
        extra = {k: str(v) for k, v in (("BOXMASK_PRECISION", args.precision),
                                        ("BOXMASK_INPUT_MIN_SIZE", args.input_min_size),
                                        ("BOXMASK_THREADS", args.server_threads),
                                        ("BOXMASK_INLINE_BOXES", args.inline_boxes))
                 if v is not None}
        extra["BOXMASK_INTRA_OP_SPINNING"] = "true" if args.spinning else "false"
        proc, url = start_server(model_dir, args.cache_mb, extra)
        pid = proc.pid
    elif args.url:
        url, pid = args.url.rstrip("/"), args.pid
    else:
        p.error("give --url (and --pid) or --start")
    load_before = os.getloadavg()
    sampler = RssSampler(pid)
    sampler.start()
    bare: BareDecoder | None = None
    bare_one: Beside | None = None
    bare_ten: Beside | None = None
    try:
        model = httpx.get(f"{url}/v1/models", timeout=120).json()
        conn = Connection(url)
        try:
            label = model["models"][0]["categories"][0]["name"]
            if not args.no_bare and (args.start or args.model_dir):
                folder = served_model_dir(args.model_dir, model["models"][0]["name"])
                if folder is None:
                    print(f"no folder of model {model['models'][0]['name']!r} here: no bare "
                          "decoder", file=sys.stderr)
                else:
                    bare = BareDecoder(folder, args.precision, args.server_threads,
                                       args.input_min_size, args.spinning)
            size = args.image_size
            images = sample_images(args.photos, size, args.uncached)
            first = [timed(conn, {"image": base64.b64encode(png).decode(),
                                  "boxes": boxes(min(hw), 1, i), "labels": [label]})
                     for i, (png, hw) in enumerate(images)]
            upload, after_upload = [], []
            for i, (png, hw) in enumerate(sample_images(args.photos, size, args.uncached, salt=1)):
                start = time.perf_counter()
                status, text = conn.post("/v1/images", png, "image/png")
                upload.append((time.perf_counter() - start) * 1000)
                if status != 200:
                    raise RuntimeError(f"upload failed: {status} {text[:300]!r}")
                after_upload.append(timed(conn, {"image_id": json.loads(text)["image_id"],
                                                 "boxes": boxes(min(hw), 1, i), "labels": [label]}))
            png, hw = images[0]
            image_id = json.loads(conn.post("/v1/images", png, "image/png")[1])["image_id"]
            side = min(hw)
            one = {"image_id": image_id, "boxes": boxes(side, 1, 1), "labels": [label]}
            one_scored = {**one, "class_scores": True}
            one_unlabelled = {"image_id": image_id, "boxes": one["boxes"]}
            ten = {"image_id": image_id, "boxes": boxes(side, 10, 2), "labels": [label] * 10}
            for _ in range(5):  # warm-up: first calls pay for lazy allocations
                for body in (one, one_scored, one_unlabelled, ten):
                    timed(conn, body)
            single = [timed(conn, one) for _ in range(args.cached)]
            scored = [timed(conn, one_scored) for _ in range(max(args.cached // 2, 1))]
            unlabelled = [timed(conn, one_unlabelled) for _ in range(max(args.cached // 2, 1))]
            multi = [timed(conn, ten) for _ in range(args.ten)]
            if bare is not None:
                bare.set_image(png)
                for _ in range(3):  # warm-up, as for the requests
                    bare.decode(one), bare.decode(ten)
                bare_one = beside(conn, bare, one, args.cached, pid)
                bare_ten = beside(conn, bare, ten, args.ten, pid)
        finally:
            conn.close()
        load = sustained(url, one, args.threads, args.seconds)
    finally:
        sampler.stop.set()
        sampler.join()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)

    results = {"model": model["models"][0]["name"], "image_size": args.image_size,
               "precision": args.precision, "input_min_size": args.input_min_size,
               "server_threads": args.server_threads, "spinning": args.spinning,
               "inline_boxes": args.inline_boxes,
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
                          "end": sampler.samples[-1][1] if sampler.samples else None},
               "load_average_1min": {"before": round(load_before[0], 2),
                                     "after": round(os.getloadavg()[0], 2)},
               "cpu_count": os.cpu_count()}
    print(f"\nboxmask server benchmark: model {results['model']!r}, {results['images']}, "
          f"precision {args.precision or 'server default'}, input min size "
          f"{args.input_min_size or 'the card'}, ONNX Runtime threads "
          f"{args.server_threads or 'one per core'}, spinning {'on' if args.spinning else 'off'}"
          f", {url}")
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
    if bare_one is not None and bare_ten is not None:
        results["beside_bare_decoder"] = {}
        print("\nThe same cached requests beside the bare decoder call (alternating blocks):")
        print("| case | n | HTTP p50 / p95 ms | bare decoder p50 / p95 ms | decoder + masks "
              "(paste, RLE) p50 ms | overhead p50 ms (HTTP - bare) | CPU ms: server per "
              "request / bare decoder per call |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, b in (("cached, 1 box", bare_one), ("cached, 10 boxes", bare_ten)):
            h, d = percentiles(b.http_ms), percentiles(b.decoder_ms)
            w = percentiles(b.with_masks_ms)
            results["beside_bare_decoder"][name] = {
                "http_ms": h, "bare_decoder_ms": d, "decoder_and_masks_ms": w,
                "overhead_p50_ms": h["p50"] - d["p50"], "server_cpu_ms": b.server_cpu_ms,
                "bare_decoder_cpu_ms": b.decoder_cpu_ms}
            cpu = (f"{b.server_cpu_ms:.1f} / {b.decoder_cpu_ms:.1f}"
                   if b.server_cpu_ms is not None else f"- / {b.decoder_cpu_ms:.1f}")
            print(f"| {name} | {h['n']} | {h['p50']:.1f} / {h['p95']:.1f} | {d['p50']:.1f} / "
                  f"{d['p95']:.1f} | {w['p50']:.1f} | {h['p50'] - d['p50']:.1f} | {cpu} |")
    print(f"sustained, 1 box, {load['threads']} threads: {load['rps']:.1f} req/s over "
          f"{load['seconds']:.1f} s, {load['requests']} requests, {load['errors']} errors"
          + (f" (by status: {load['error_statuses']})" if load.get("error_statuses") else ""))
    rss = results["rss_mb"]
    if rss["samples"]:
        print(f"server RSS: {rss['start']:.0f} MB at start, {rss['max']:.0f} MB max, "
              f"{rss['end']:.0f} MB at end ({rss['samples']} samples)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.record_in:
        record(args.record_in, results, argv)


def record(evaluation: Path, results: dict, argv: list[str] | None) -> None:
    """``results`` as the ``server`` entry of ``evaluation`` (a model's evaluation.json)."""
    data = json.loads(evaluation.read_text()) if evaluation.is_file() else {}
    args = sys.argv[1:] if argv is None else argv
    card = evaluation.parent / "model.json"
    files = ({k: v["sha256"] for k, v in json.loads(card.read_text())["files"].items()}
             if card.is_file() else None)
    data["server"] = {"command": " ".join(["python benchmarks/server.py", *args]),
                      "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "model_files": files, **results}
    write_json(evaluation, data, indent=2)
    print(f"recorded as 'server' in {evaluation}")


if __name__ == "__main__":
    main()
