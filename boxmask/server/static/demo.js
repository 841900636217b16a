// boxmask demo page: upload an image, drag boxes, see class-specific masks.
// Plain browser JavaScript, no build step. Talks to the same API as any client:
// POST /v1/images once per image, then POST /v1/segment per box (by image_id).
"use strict";

const $ = (id) => document.getElementById(id);
const imageCanvas = $("image");
const overlay = $("overlay");
const status = $("status");
const COLORS = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]];

const state = { file: null, imageId: null, width: 0, height: 0, instances: [], drag: null, models: [] };

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

function redraw() {
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  if (!state.width) return;
  const pixels = ctx.createImageData(state.width, state.height);
  state.instances.forEach((inst, n) => {
    const [r, g, b] = COLORS[n % COLORS.length];
    inst.bitmap.forEach((on, i) => {
      if (on) { pixels.data.set([r, g, b, 140], 4 * i); }
    });
  });
  ctx.putImageData(pixels, 0, 0);
  state.instances.forEach((inst, n) => {
    const [r, g, b] = COLORS[n % COLORS.length];
    const [x1, y1, x2, y2] = inst.box;
    ctx.strokeStyle = `rgb(${r},${g},${b})`;
    ctx.lineWidth = Math.max(1, state.width / 400);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.font = `${Math.max(10, Math.round(state.width / 50))}px sans-serif`;
    ctx.fillText(inst.score === null ? inst.label : `${inst.label} ${inst.score.toFixed(2)}`, x1 + 2, Math.max(12, y1 - 3));
  });
  if (state.drag && state.drag.end) {
    const [x1, y1, x2, y2] = dragBox();
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#ffffff";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.setLineDash([]);
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
    item.innerHTML = `<span class="swatch" style="background:rgb(${r},${g},${b})"></span>`;
    // score is null when the label was chosen here and the model skipped its box head.
    const score = inst.score === null ? "" : ` (score ${inst.score.toFixed(3)})`;
    item.append(`${inst.label}${score}, ${inst.area} px, box ` +
                inst.box.map((v) => v.toFixed(0)).join(", "));
    list.append(item);
  });
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
  let text = `${model.name} knows ${model.categories.length} categories`;
  if (seen.length && unseen.length) {
    text += `: ${names(seen)} (learned from masks) and ${names(unseen)} (learned from boxes only).`;
  } else {
    text += `: ${names(model.categories)}.`;
  }
  if (model.samples.length) text += " It works on images like the samples below; other images get masks of these categories only.";
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
  for (const canvas of [imageCanvas, overlay]) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  imageCanvas.getContext("2d").drawImage(bitmap, 0, 0);
  redraw();
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

function toImage(event) {
  const rect = overlay.getBoundingClientRect();
  const x = (event.clientX - rect.left) * (overlay.width / rect.width);
  const y = (event.clientY - rect.top) * (overlay.height / rect.height);
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
  if (box[2] - box[0] < 2 || box[3] - box[1] < 2) return;  // a click, not a box
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
$("token").addEventListener("change", loadModels);

loadModels();
