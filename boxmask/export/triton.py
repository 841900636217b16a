"""A Triton model repository for an exported model directory.

```
REPO/boxmask_encoder/config.pbtxt   1/model.onnx | 1/model.plan
REPO/boxmask_decoder/config.pbtxt   1/model.onnx | 1/model.plan
REPO/boxmask_labelled_decoder/...  1/model.onnx  (when the export has the labelled decoder)
REPO/boxmask_detector/config.pbtxt  1/model.onnx
REPO/model.json                     the card, for the boxmask server that talks to this Triton
```
Tensor names are those of docs/contracts.md §4, so ``boxmask.runtime``'s Triton session talks
to this repository exactly as the in-process session talks to the ONNX files.

Batching: every model has ``max_batch_size: 0``. The encoder's input is one image of any size,
and the decoder's inputs are one image's feature maps plus its N boxes: two requests only share
a batch if their images have the same padded size, which Triton's dynamic batcher cannot
require. The decoder already batches where it pays, over all boxes of a request (N is a
dynamic axis); concurrency across requests comes from several instances per GPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx

from boxmask.runtime.contract import (
    CARD_NAME,
    DECODER,
    LABELLED_DECODER,
    TRITON_MODEL_NAMES,
    file_key,
)

_ONNX_TO_TRITON = {1: "TYPE_FP32", 7: "TYPE_INT64", 6: "TYPE_INT32", 10: "TYPE_FP16", 9: "TYPE_BOOL"}


def _tensor_entries(values) -> str:
    entries = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        entries.append(f'  {{ name: "{v.name}" data_type: {_ONNX_TO_TRITON[t.elem_type]} '
                       f'dims: [ {", ".join(str(d) for d in dims)} ] }}')
    return ",\n".join(entries)


def triton_config(name: str, onnx_path: Path, platform: str, kind: str, count: int) -> str:
    """config.pbtxt text for one graph; inputs and outputs read from the ONNX file itself."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    backend = ('backend: "onnxruntime"' if platform == "onnxruntime_onnx"
               else f'platform: "{platform}"')
    return (
        f'name: "{name}"\n{backend}\nmax_batch_size: 0\n'
        f"input [\n{_tensor_entries(model.graph.input)}\n]\n"
        f"output [\n{_tensor_entries(model.graph.output)}\n]\n"
        f"instance_group [ {{ kind: {kind} count: {count} }} ]\n"
    )


def write_triton_repository(model_dir: Path, repo: Path, gpu: bool = True,
                            decoder_instances: int = 2) -> Path:
    """Write (or refresh) the repository at ``repo`` from ``model_dir``.

    Uses the TensorRT plans when the export built them (``encoder_trt``/``decoder_trt`` in the
    card), the ONNX files otherwise. ``gpu=False`` writes KIND_CPU instance groups.
    """
    model_dir, repo = Path(model_dir), Path(repo)
    card = json.loads((model_dir / CARD_NAME).read_text())
    files = card["files"]
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    repo.mkdir(parents=True, exist_ok=True)
    for graph, name in TRITON_MODEL_NAMES.items():
        if graph not in files:
            continue  # the labelled decoder is optional (directories exported before it)
        target = repo / name
        if target.exists():
            shutil.rmtree(target)
        (target / "1").mkdir(parents=True)
        onnx_file = model_dir / files[graph]["path"]
        plan = files.get(file_key(graph, "trt"))
        if plan is not None:
            shutil.copy2(model_dir / plan["path"], target / "1" / "model.plan")
            platform = "tensorrt_plan"
        else:
            shutil.copy2(onnx_file, target / "1" / "model.onnx")
            platform = "onnxruntime_onnx"
        count = decoder_instances if graph in (DECODER, LABELLED_DECODER) else 1
        (target / "config.pbtxt").write_text(triton_config(name, onnx_file, platform, kind, count))
    shutil.copy2(model_dir / CARD_NAME, repo / CARD_NAME)
    return repo
