"""docs/img/labelstudio.png: boxmask's masks as a real Label Studio shows them.

Starts Label Studio (.venv-labelstudio, from scripts/install_labelstudio.sh) and the boxmask
server with the bundled demo model, imports one synthetic validation image (upscaled 4x) with
its ground-truth boxes as an annotation, connects the backend, runs "Retrieve Predictions",
logs into the UI in headless Chromium (DevTools protocol) and screenshots the prediction tab.

    .venv/bin/python scripts/labelstudio_screenshot.py      # needs data/synth128 and chromium
"""
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.processes import free_port, stop_process  # noqa: E402 - needs ROOT on sys.path
from tests.server.test_demo_page import DevTools  # noqa: E402 - needs ROOT on sys.path

LS_VENV = ROOT / ".venv-labelstudio"
TOKEN = "boxmask-shot-token-0123"
work = Path(tempfile.mkdtemp(prefix="boxmask-ls-shot-"))
data = work / "data"
shutil.copytree(LS_VENV / "template-data", data)
lport, bport = free_port(), free_port()
lurl, burl = f"http://127.0.0.1:{lport}", f"http://127.0.0.1:{bport}"
env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "DJANGO"))}
env.update({"LABEL_STUDIO_USERNAME": "demo@boxmask.local", "LABEL_STUDIO_PASSWORD": "boxmask-demo-pass",
            "LABEL_STUDIO_USER_TOKEN": TOKEN, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_BASE_DATA_DIR": str(data), "LABEL_STUDIO_HOST": lurl,
            "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false"})
ls = subprocess.Popen([str(LS_VENV / "bin/label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(lport)],
                      env=env, stdout=open(work / "ls.log", "wb"),  # noqa: SIM115 - open while LS runs
                      stderr=subprocess.STDOUT, cwd=data)
benv = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "BOXMASK_"))}
benv.update({"BOXMASK_DEMO": "false", "BOXMASK_LABELSTUDIO_SCORE_THRESHOLD": "0.3"})
bm = subprocess.Popen([str(ROOT / ".venv/bin/python"), "-m", "uvicorn", "boxmask.server.app:create_app", "--factory",
                       "--host", "127.0.0.1", "--port", str(bport)], env=benv, stdout=open(work / "bm.log", "wb"),  # noqa: SIM115 - open while it runs
                      stderr=subprocess.STDOUT, cwd=ROOT)
chrome = None
try:
    for url in (f"{lurl}/health", f"{burl}/labelstudio/health"):
        for _ in range(600):
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    print("up")
    c = httpx.Client(base_url=lurl, headers={"Authorization": f"Token {TOKEN}"}, timeout=120)
    names = ["disc", "square", "triangle", "cross", "ring", "star", "crescent", "hexagon"]
    labels = "".join(f'<Label value="{n}"/>' for n in names)
    config = (f'<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image" smart="true">{labels}'
              f'</RectangleLabels><BrushLabels name="mask" toName="image">{labels}</BrushLabels></View>')
    pid = c.post("/api/projects", json={"title": "boxmask demo", "label_config": config}).json()["id"]
    coco = json.loads((ROOT / "data/synth128/annotations/instances_val.json").read_text())
    img = coco["images"][3]
    scale = 4
    im = Image.open(ROOT / "data/synth128/images/val" / img["file_name"]).convert("RGB")
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    c.post(f"/api/projects/{pid}/import", files={"file0": ("shapes.png", buf.getvalue(), "image/png")})
    task = c.get("/api/tasks", params={"project": pid}).json()["tasks"][0]
    cats = {x["id"]: x["name"] for x in coco["categories"]}
    W, H = im.width, im.height
    result = []
    for i, a in enumerate(x for x in coco["annotations"] if x["image_id"] == img["id"]):
        x, y, w, h = [v * scale for v in a["bbox"]]
        result.append({"id": f"b{i}", "type": "rectanglelabels", "from_name": "box", "to_name": "image",
                       "original_width": W, "original_height": H, "image_rotation": 0,
                       "value": {"x": 100 * x / W, "y": 100 * y / H, "width": 100 * w / W, "height": 100 * h / H,
                                 "rotation": 0, "rectanglelabels": [cats[a["category_id"]]]}})
    c.post(f"/api/tasks/{task['id']}/annotations", json={"result": result})
    mlid = c.post("/api/ml", json={"project": pid, "url": f"{burl}/labelstudio", "title": "boxmask", "is_interactive": True}).json()["id"]
    r = c.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
               json={"selectedItems": {"all": True, "excluded": []}})
    preds = c.get("/api/predictions", params={"task": task["id"]}).json()
    print("predictions", len(preds), [len(p["result"]) for p in preds])
    profile = work / "profile"
    chrome = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
                               "--window-size=1400,900", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pf = profile / "DevToolsActivePort"
    while not (pf.is_file() and pf.read_text().strip()):
        time.sleep(0.1)
    port = int(pf.read_text().split()[0])
    page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page")
    d = DevTools(page["webSocketDebuggerUrl"])
    d("Page.enable")
    d("Page.navigate", url=f"{lurl}/user/login/")
    time.sleep(8)  # the login form
    d.js("document.querySelector('input[name=email]').value='demo@boxmask.local'; document.querySelector('input[name=password]').value='boxmask-demo-pass'; document.querySelector('form').submit(); true")
    time.sleep(5)
    d("Page.navigate", url=f"{lurl}/projects/{pid}/data?task={task['id']}")
    time.sleep(20)
    print("click:", d.js("(() => { const el = [...document.querySelectorAll('*')].filter(e => e.childElementCount === 0 && (e.textContent||'').startsWith('boxmask-'))[0]; if (!el) return 'none'; el.click(); return el.textContent; })()"))
    time.sleep(4)
    shot = d("Page.captureScreenshot", format="png")
    (ROOT / "docs/img").mkdir(exist_ok=True)
    (ROOT / "docs/img/labelstudio.png").write_bytes(base64.b64decode(shot["data"]))
    print("shot saved", d.js("location.href"))
finally:
    if chrome:
        stop_process(chrome, 10)
    stop_process(bm)
    stop_process(ls)
    shutil.rmtree(work, ignore_errors=True)
