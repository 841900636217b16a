"""A stand-in for `boxmask finetune` in the training loop's tests (`BOXMASK_LABELSTUDIO_TRAIN_COMMAND`).

Run as `python fake_finetune.py finetune --from CKPT --coco ... --out OUT ...`, it does what the
loop relies on, in a fraction of a second: prints the iterations line, writes
OUT/train/checkpoint_last.pt (a copy of CKPT) and OUT/model (a copy of FAKE_FINETUNE_MODEL, its
card renamed after OUT, as the real export names it). FAKE_FINETUNE_MODE changes it:
`sleep` waits for FAKE_FINETUNE_RELEASE to exist, `fail` exits with 3, `memory` allocates until
the memory limit stops it, `hang` sleeps forever. FAKE_FINETUNE_PID names a file it writes its
process id to first (the job's own: the launcher execs into it).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    assert argv[0] == "finetune", argv
    args = dict(zip(argv[1::2], argv[2::2], strict=False))
    out, checkpoint = Path(args["--out"]), Path(args["--from"])
    mode = os.environ.get("FAKE_FINETUNE_MODE", "")
    if os.environ.get("FAKE_FINETUNE_PID"):
        Path(os.environ["FAKE_FINETUNE_PID"]).write_text(str(os.getpid()))
    print(f"fine-tuning {checkpoint.name} on 1 images, 7 iterations on cpu", flush=True)
    if mode == "fail":
        print("error: something went wrong", flush=True)
        sys.exit(3)
    if mode == "memory":
        hoard = []
        while True:
            hoard.append(bytearray(64 << 20))
    if mode == "hang":
        time.sleep(3600)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "train" / "metrics.jsonl").write_text(json.dumps({"kind": "iter", "iteration": 3}) + "\n")
    if mode == "sleep":
        release = Path(os.environ["FAKE_FINETUNE_RELEASE"])
        while not release.exists():
            time.sleep(0.05)
    shutil.copy(checkpoint, out / "train" / "checkpoint_last.pt")
    model = out / "model"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(os.environ["FAKE_FINETUNE_MODEL"], model)
    card = json.loads((model / "model.json").read_text())
    card["name"] = out.name
    (model / "model.json").write_text(json.dumps(card))
    (out / "finetune.json").write_text(json.dumps({"args": argv}))


if __name__ == "__main__":
    main(sys.argv[1:])
