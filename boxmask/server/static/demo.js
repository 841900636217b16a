// boxmask demo page: upload an image, drag boxes, see class-specific masks.
// Plain browser JavaScript, no build step. Talks to the same API as any client:
// POST /v1/images once per image, then POST /v1/segment per box (by image_id).
//
// Two coordinate systems: the image's own pixels (what the API takes and returns: boxes, masks)
// and the screen's (CSS pixels of the stage, which is the image scaled to fit the window).
// Boxes are drawn and labels written in screen pixels, so they stay legible at any scale;
// every box sent to the server is in image pixels (toImage).
"use strict";

const $ = (id) => document.getElementById(id);
const stage = $("stage");
const imageCanvas = $("image");
const maskCanvas = $("masks");
const overlay = $("overlay");
const status = $("status");
const COLORS = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]];
const LABEL_FONT_PX = 13;   // screen pixels, whatever the image's scale
const MIN_STAGE_PX = 160;   // never shrink the stage below this, however small the window

const state = { file: null, imageId: null, width: 0, height: 0, instances: [], drag: null,
                models: [], shown: { width: 0, height: 0 } };

function setStatus(text, isError = false) {
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function headers(extra = {}) {
  const token = $("token").value.trim();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const err = new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
    err.code = body && body.error ? body.error.code : null;
    throw err;
  }
  return body;
}

// COCO compressed RLE: the counts string of pycocotools' rleToString, column-major runs
// starting with background. Decoding follows rleFrString in pycocotools' maskApi.c.
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

function decodeRle(rle) {
  const [h, w] = rle.size;
  const mask = new Uint8Array(h * w);  // row-major, for ImageData
  let i = 0, value = 0;
  for (const run of rleCounts(rle.counts)) {
    if (value) {
      for (let j = i; j < i + run; j++) mask[(j % h) * w + Math.floor(j / h)] = 1;
    }
    i += run;
    value = 1 - value;
  }
  return mask;
}

// The stage's size on screen: the whole image inside the window's width and height, scaled up
// or down (a 128-px sample fills the page, a photo larger than the window fits in it), leaving
// room above it for the model line and the status. CSS does the sizing (so a resize or a
// scrollbar re-fits it); the overlay follows the size it gets.
function fitStage() {
  const aspect = state.width / state.height;
  stage.style.aspectRatio = `${state.width} / ${state.height}`;
  stage.style.width = `max(${MIN_STAGE_PX}px, min(100%, calc((100vh - 96px) * ${aspect})))`;
  layout();
}

function layout() {
  if (!state.width) return;
  const rect = stage.getBoundingClientRect();
  const shown = { width: rect.width, height: rect.height };
  if (shown.width === state.shown.width && shown.height === state.shown.height) return;
  state.shown = shown;
  const scale = shown.width / state.width;
  imageCanvas.classList.toggle("upscaled", scale >= 2);
  // The overlay's own pixels are the screen's (device pixels, for crisp text and lines).
  const dpr = window.devicePixelRatio || 1;
  overlay.width = Math.max(1, Math.round(shown.width * dpr));
  overlay.height = Math.max(1, Math.round(shown.height * dpr));
  stage.dataset.scale = scale.toFixed(4);
  redraw();
}

// Image pixels -> screen (CSS) pixels of the stage.
function toScreen([x1, y1, x2, y2]) {
  const sx = state.shown.width / state.width, sy = state.shown.height / state.height;
  return [x1 * sx, y1 * sy, x2 * sx, y2 * sy];
}

function paintMasks() {
  const ctx = maskCanvas.getContext("2d");
  ctx.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
  if (!state.width) return;
  const pixels = ctx.createImageData(state.width, state.height);
  state.instances.forEach((inst, n) => {
    const [r, g, b] = COLORS[n % COLORS.length];
    inst.bitmap.forEach((on, i) => {
      if (on) { pixels.data.set([r, g, b, 140], 4 * i); }
    });
  });
  ctx.putImageData(pixels, 0, 0);
}

const overlaps = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;

// Where a box's label goes: above the box, else inside its top, else below it; moved down a
// line at a time while it would cover a label already placed. Screen pixels.
function placeLabel(box, w, h, placed) {
  const [x1, y1, , y2] = box;
  const x = Math.min(Math.max(0, x1), Math.max(0, state.shown.width - w));
  const candidates = [y1 - h, y1, y2];
  for (const y of candidates) {
    const rect = { x, y, w, h };
    if (y >= 0 && y + h <= state.shown.height && !placed.some((p) => overlaps(p, rect))) return rect;
  }
  let rect = { x, y: Math.max(0, Math.min(y1, state.shown.height - h)), w, h };
  for (let tries = 0; tries < 50 && placed.some((p) => overlaps(p, rect)); tries++) {
    rect = { ...rect, y: rect.y + h };
    if (rect.y + h > state.shown.height) rect = { ...rect, y: 0, x: Math.min(rect.x + w, state.shown.width - w) };
  }
  return rect;
}

function redraw() {
  const ctx = overlay.getContext("2d");
  const dpr = overlay.width / Math.max(1, state.shown.width || 1);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  paintMasks();
  if (!state.width) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);  // from here on: CSS pixels of the stage
  ctx.lineWidth = 2;
  ctx.font = `600 ${LABEL_FONT_PX}px system-ui, sans-serif`;
  ctx.textBaseline = "middle";
  const placed = [];
  state.instances.forEach((inst, n) => {
    const [r, g, b] = COLORS[n % COLORS.length];
    const box = toScreen(inst.box);
    const [x1, y1, x2, y2] = box;
    ctx.strokeStyle = `rgb(${r},${g},${b})`;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = inst.score === null ? inst.label : `${inst.label} ${inst.score.toFixed(2)}`;
    const rect = placeLabel(box, Math.ceil(ctx.measureText(text).width) + 8, LABEL_FONT_PX + 6, placed);
    placed.push(rect);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(rect.x, rect.y, rect.w, rect.h);
    ctx.fillStyle = 0.299 * r + 0.587 * g + 0.114 * b > 150 ? "#111" : "#fff";
    ctx.fillText(text, rect.x + 4, rect.y + rect.h / 2);
  });
  // Where each label went, in screen pixels: what the browser test reads.
  overlay.dataset.labels = JSON.stringify(placed.map((p) => [p.x, p.y, p.w, p.h].map(Math.round)));
  if (state.drag && state.drag.end) {
    const [x1, y1, x2, y2] = toScreen(dragBox());
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#ffffff";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.strokeStyle = "#1d2330";
    ctx.lineDashOffset = 6;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.setLineDash([]);
    ctx.lineDashOffset = 0;
  }
}

function listInstances() {
  const list = $("instances");
  list.innerHTML = "";
  state.instances.forEach((inst, n) => {
    const [r, g, b] = COLORS[n % COLORS.length];
    const item = document.createElement("li");
    item.dataset.label = inst.label;
    item.dataset.area = String(inst.area);
    item.dataset.box = JSON.stringify(inst.box);  // as the server answered it: image pixels
    item.innerHTML = `<span class="swatch" style="background:rgb(${r},${g},${b})"></span>`;
    // score is null when the label was chosen here and the model skipped its box head.
    const score = inst.score === null ? "" : ` (score ${inst.score.toFixed(3)})`;
    item.append(`${inst.label}${score}, ${inst.area} px, box ` +
                inst.box.map((v) => v.toFixed(0)).join(", "));
    list.append(item);
  });
  $("undo").disabled = state.instances.length === 0;
  $("clear").disabled = state.instances.length === 0;
}

// Take back the last box (its mask goes with it); the server keeps nothing per box.
function undo() {
  if (!state.instances.length) return;
  const inst = state.instances.pop();
  redraw();
  listInstances();
  setStatus(`Removed the last box (${inst.label}). Drag another box.`);
}

async function loadModels() {
  try {
    const body = await api("/v1/models");
    state.models = body.models;
    const select = $("model");
    select.innerHTML = "";
    for (const m of body.models) {
      const option = new Option(`${m.name}${m.status === "ready" ? "" : " (unavailable)"}`, m.name);
      option.selected = m.name === body.default;
      select.append(option);
    }
    fillLabels();
    setStatus(body.models.length ? "Choose an image." :
      "The server has no model: see /readyz for how to get one.", !body.models.length);
  } catch (err) {
    setStatus(`Could not list models: ${err.message}`, true);
  }
}

function fillLabels() {
  const model = state.models.find((m) => m.name === $("model").value);
  const select = $("label");
  select.innerHTML = '<option value="">predicted class</option>';
  for (const c of (model ? model.categories : [])) select.append(new Option(c.name, c.name));
  describeModel(model);
  showSamples(model);
}

// What the chosen model knows, from its categories: which it learned from masks (seen) and
// which from boxes alone (the method's unseen categories).
function describeModel(model) {
  const knows = $("knows");
  if (!model) { knows.textContent = ""; return; }
  const names = (cats) => cats.map((c) => c.name).join(", ");
  const seen = model.categories.filter((c) => c.seen === true);
  const unseen = model.categories.filter((c) => c.seen === false);
  let text = `Masks come from model ${model.name}, which knows ${model.categories.length} categories`;
  if (seen.length && unseen.length) {
    text += `: ${names(seen)} (learned from masks) and ${names(unseen)} (learned from boxes only).`;
  } else {
    text += `: ${names(model.categories)}.`;
  }
  if (model.samples.length) text += " It works on images like the samples above; other images get masks of these categories only.";
  knows.textContent = text;
}

// One-click sample images of the model's own domain (GET /v1/models lists them). Fetched with
// the same headers as the API, so a server with a token still serves them.
async function showSamples(model) {
  const box = $("samples");
  box.innerHTML = "";
  for (const url of (model ? model.samples : [])) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sample";
    button.title = `Use sample ${url.split("/").pop()}`;
    box.append(button);
    try {
      const response = await fetch(url, { headers: headers() });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const blob = await response.blob();
      const img = document.createElement("img");
      img.src = URL.createObjectURL(blob);
      img.alt = button.title;
      button.append(img);
      const file = new File([blob], url.split("/").pop(), { type: blob.type });
      button.addEventListener("click", () => openFile(file));
    } catch (err) {
      button.remove();
    }
  }
}

async function uploadImage() {
  setStatus("Encoding the image…");
  const started = performance.now();
  const body = await api(`/v1/images?model=${encodeURIComponent($("model").value)}`, {
    method: "POST",
    headers: { "Content-Type": state.file.type || "application/octet-stream" },
    body: state.file,
  });
  state.imageId = body.image_id;
  setStatus(`Image encoded in ${(performance.now() - started).toFixed(0)} ms. Drag a box on it.`);
}

async function openFile(file) {
  state.file = file;
  state.instances = [];
  listInstances();
  const bitmap = await createImageBitmap(file);
  state.width = bitmap.width;
  state.height = bitmap.height;
  for (const canvas of [imageCanvas, maskCanvas]) {  // the image's own pixels
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  imageCanvas.getContext("2d").drawImage(bitmap, 0, 0);
  state.shown = { width: 0, height: 0 };
  fitStage();
  redraw();
  stage.scrollIntoView({ block: "nearest" });
  try {
    await uploadImage();
  } catch (err) {
    state.imageId = null;
    setStatus(`Upload failed: ${err.message}`, true);
  }
}

async function segment(box) {
  const label = $("label").value || null;
  const request = { image_id: state.imageId, boxes: [box], labels: [label], model: $("model").value };
  const started = performance.now();
  let body;
  try {
    body = await api("/v1/segment", { method: "POST", headers: { "Content-Type": "application/json" },
                                      body: JSON.stringify(request) });
  } catch (err) {
    if (err.code !== "unknown_image") throw err;
    await uploadImage();  // evicted from the server's cache: send the image again, once
    request.image_id = state.imageId;
    body = await api("/v1/segment", { method: "POST", headers: { "Content-Type": "application/json" },
                                      body: JSON.stringify(request) });
  }
  for (const inst of body.instances) {
    const bitmap = decodeRle(inst.mask);
    const area = bitmap.reduce((a, v) => a + v, 0);
    state.instances.push({ ...inst, bitmap, area });
  }
  redraw();
  listInstances();
  setStatus(`Mask in ${(performance.now() - started).toFixed(0)} ms. Drag another box.`);
}

// A pointer position (screen) -> image pixels, clamped to the image.
function toImage(event) {
  const rect = overlay.getBoundingClientRect();
  const x = (event.clientX - rect.left) * (state.width / rect.width);
  const y = (event.clientY - rect.top) * (state.height / rect.height);
  return [Math.min(Math.max(x, 0), state.width), Math.min(Math.max(y, 0), state.height)];
}

function dragBox() {
  const [ax, ay] = state.drag.start;
  const [bx, by] = state.drag.end;
  return [Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by)];
}

overlay.addEventListener("mousedown", (event) => {
  if (!state.imageId) return;
  state.drag = { start: toImage(event), end: null };
});
overlay.addEventListener("mousemove", (event) => {
  if (!state.drag) return;
  state.drag.end = toImage(event);
  redraw();
});
window.addEventListener("mouseup", async (event) => {
  if (!state.drag) return;
  state.drag.end = toImage(event);
  const box = dragBox();
  state.drag = null;
  redraw();
  // A click, not a box: under 3 screen pixels either way.
  const [sx1, sy1, sx2, sy2] = toScreen(box);
  if (sx2 - sx1 < 3 || sy2 - sy1 < 3) return;
  try {
    setStatus("Segmenting…");
    await segment(box.map((v) => Math.round(v * 10) / 10));
  } catch (err) {
    setStatus(`Segment failed: ${err.message}`, true);
  }
});

$("file").addEventListener("change", (event) => {
  if (event.target.files.length) openFile(event.target.files[0]);
});
$("model").addEventListener("change", () => {
  fillLabels();
  if (state.file) openFile(state.file);
});
$("clear").addEventListener("click", () => {
  state.instances = [];
  redraw();
  listInstances();
});
$("undo").addEventListener("click", undo);
document.addEventListener("keydown", (event) => {
  const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement;
  if ((event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z" && !typing) {
    event.preventDefault();
    undo();
  }
});
new ResizeObserver(layout).observe(stage);
$("token").addEventListener("change", loadModels);

loadModels();
