"""The names both sides of the exported model directory must agree on (docs/contracts.md §4).

Export (torch) writes what the runtime (no torch) reads; each fact they share is written here
once, in a module that imports nothing heavy, so that `boxmask.export`, `boxmask.runtime`, the
server and the batch labeler all read it from one place (docs/architecture.md):

- the card's file name, the graphs' names and their file names (and card ``files`` keys) per
  precision;
- the graphs' input and output tensor names, in the order the graphs take and give them;
- the model names of the Triton repository the exporter writes and the Triton session calls;
- where bundled models live, how to find exported model directories, and what to tell a user
  who has none.
"""

from __future__ import annotations

import json
from pathlib import Path

#: The model card of an exported model directory.
CARD_NAME = "model.json"

#: The graphs of an exported model directory, by the name the card's ``files``, the Triton
#: repository and the runtime's sessions know them by. The labelled decoder is optional
#: (directories exported before it have none).
ENCODER = "encoder"
DECODER = "decoder"
LABELLED_DECODER = "labelled_decoder"
DETECTOR = "detector"
GRAPHS: tuple[str, ...] = (ENCODER, DECODER, LABELLED_DECODER, DETECTOR)

#: A graph's variants besides fp32 ONNX: card ``files`` key suffix -> file name ending.
#: ``trt`` is a TensorRT engine, built for the encoder and the decoder only.
_FILE_ENDINGS: dict[str | None, str] = {
    None: ".onnx", "fp16": ".fp16.onnx", "int8": ".int8.onnx", "trt": ".plan"}


def graph_file(graph: str, variant: str | None = None) -> str:
    """The file name of ``graph`` (``variant``: None for fp32 ONNX, ``"fp16"``, ``"int8"``,
    ``"trt"``) in an exported model directory: ``encoder.onnx``, ``decoder.int8.onnx``, ..."""
    return graph + _FILE_ENDINGS[variant]


def file_key(graph: str, variant: str | None = None) -> str:
    """The card ``files`` key of ``graph``'s ``variant``: ``encoder``, ``decoder_int8``, ..."""
    return graph if variant is None else f"{graph}_{variant}"


#: The encoder: ``image [1, 3, H, W]`` RGB float32 0..255 -> the FPN levels.
ENCODER_INPUT = "image"
ENCODER_OUTPUTS: tuple[str, ...] = ("p2", "p3", "p4", "p5")
#: The optional pixel map (``model.mask_pixel_channels``): ``[1, C, H, W]`` at the padded
#: input's resolution. A model whose mask heads fuse it has it as the encoder's last output and
#: as the last input of the decoders and the detector; a model without it has neither.
PIXEL_MAP = "pixels"
#: The per-box inputs: ``boxes [N, 4]`` float32 xyxy in resized-image pixels, ``labels [N]``
#: int64 contiguous (0 = use the predicted class), ``image_size [2]`` int64 resized (h, w).
BOXES = "boxes"
LABELS = "labels"
IMAGE_SIZE = "image_size"
#: The decoders' outputs: ``mask_logits [N, 1, R, R]``, ``class_scores [N, C + 1]``,
#: ``labels_out [N]`` (the label used).
MASK_LOGITS = "mask_logits"
CLASS_SCORES = "class_scores"
LABELS_OUT = "labels_out"
#: The detector's outputs besides ``boxes`` and ``labels``: ``scores [K]``,
#: ``mask_probs [K, 1, R, R]`` (not pasted).
SCORES = "scores"
MASK_PROBS = "mask_probs"
#: The decoder: features of one image + boxes + labels (0 = predicted) + resized (h, w).
DECODER_INPUTS: tuple[str, ...] = (*ENCODER_OUTPUTS, BOXES, LABELS, IMAGE_SIZE)
DECODER_OUTPUTS: tuple[str, ...] = (MASK_LOGITS, CLASS_SCORES, LABELS_OUT)
#: The labelled decoder (optional): the decoder's inputs, every label given (1..C), and only the
#: masks out. It leaves out the box head, whose only use when the label is given is the class
#: score, and which is most of the cost of a lone box (docs/benchmarks.md).
LABELLED_DECODER_INPUTS: tuple[str, ...] = DECODER_INPUTS
LABELLED_DECODER_OUTPUTS: tuple[str, ...] = (MASK_LOGITS,)
#: The detector: features of one image + resized (h, w) -> detections with mask probabilities.
DETECTOR_INPUTS: tuple[str, ...] = (*ENCODER_OUTPUTS, IMAGE_SIZE)
DETECTOR_OUTPUTS: tuple[str, ...] = (BOXES, LABELS, SCORES, MASK_PROBS)


#: The optional mask-quality output (``model.mask_quality``): ``quality [N]``, each mask's
#: predicted IoU in [0, 1]. A model with the head has it as the last output of both decoders.
QUALITY = "quality"


def decoder_outputs(quality: bool, labelled: bool = False) -> tuple[str, ...]:
    """A decoder's outputs: the contract's, then ``quality`` for a model with the head."""
    base = LABELLED_DECODER_OUTPUTS if labelled else DECODER_OUTPUTS
    return (*base, QUALITY) if quality else base


def feature_names(pixel_map: bool) -> tuple[str, ...]:
    """The encoder's outputs, which the decoders and the detector take under the same names:
    the FPN levels, then the pixel map for a model that has one."""
    return (*ENCODER_OUTPUTS, PIXEL_MAP) if pixel_map else ENCODER_OUTPUTS


def with_pixel_map(inputs: tuple[str, ...], pixel_map: bool) -> tuple[str, ...]:
    """A per-box graph's (or the detector's) inputs: the pixel map comes last when present."""
    return (*inputs, PIXEL_MAP) if pixel_map else inputs


#: Graph -> model name in the Triton repository (`boxmask export --triton-repo`).
TRITON_MODEL_NAMES: dict[str, str] = {
    ENCODER: "boxmask_encoder",
    DECODER: "boxmask_decoder",
    LABELLED_DECODER: "boxmask_labelled_decoder",
    DETECTOR: "boxmask_detector",
}

#: The folder of models shipped inside the package; each sub-folder is an exported model
#: directory and is known by its card's ``name`` (or its folder's name).
BUNDLED_MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"

#: What to do when there is no model: said by the server, `boxmask label` and `boxmask serve`.
HOW_TO_GET_A_MODEL = (
    "train and export one (`boxmask train CONFIG`, then `boxmask export CHECKPOINT --out DIR`) "
    "and pass its directory (`boxmask label --model DIR`; `boxmask serve --model-dir DIR` or "
    "BOXMASK_MODEL_DIR=DIR); a package built from the repository ships the demo model in "
    "boxmask/assets/models/"
)


def is_model_dir(path: Path) -> bool:
    """Whether `path` is an exported model directory (it holds a card)."""
    return (Path(path) / CARD_NAME).is_file()


def find_model_dirs(root: Path) -> list[Path]:
    """``root`` itself if it is an exported model directory, else its sub-folders that are,
    sorted by folder name."""
    root = Path(root)
    if is_model_dir(root):
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if is_model_dir(p))


def card_name(model_dir: Path) -> str | None:
    """The ``name`` of a model directory's card; None when the card cannot be read."""
    try:
        return str(json.loads((Path(model_dir) / CARD_NAME).read_text(encoding="utf-8"))["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def bundled_models(folder: Path | None = None) -> dict[str, Path]:
    """Card name (folder name when the card has none) -> directory of each bundled model,
    sorted by name. `folder`: where to look instead of `BUNDLED_MODELS_DIR`."""
    folder = BUNDLED_MODELS_DIR if folder is None else Path(folder)
    if not folder.is_dir() or is_model_dir(folder):
        return {}
    found = {card_name(d) or d.name: d for d in find_model_dirs(folder)}
    return dict(sorted(found.items()))
