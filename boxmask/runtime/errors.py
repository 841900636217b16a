"""Errors of the runtime: each names one kind of bad input or failure, so that callers (the HTTP
server, the batch labeler) can map it to a status code without parsing messages.

`BadImage`, `BadBoxes` (and its `TooManyBoxes`), `TooManyMaskPixels`, `UnknownLabel`,
`UnknownImage` and `NoDetector` are the caller's fault (4xx); `BackendUnavailable` is ours (503); `ModelDirError` means the
exported model directory is broken, and its `ModelNotFound` that a name or folder given for a
model names none.
"""

from __future__ import annotations

from collections.abc import Sequence


class RuntimeInputError(ValueError):
    """Base class of errors caused by the caller's input."""


class BadImage(RuntimeInputError):
    """The bytes or array are not a decodable image, or the image is too large."""


class BadBoxes(RuntimeInputError):
    """Boxes that cannot be used: wrong shape, NaN/inf, empty or inverted, outside the image
    (`boxmask.runtime.boxes` has the rules); `box_index` names the box, where one is to blame."""

    def __init__(self, message: str, box_index: int | None = None) -> None:
        super().__init__(message)
        self.box_index = box_index


class TooManyBoxes(BadBoxes):
    """More boxes in one call than the limit (`count` against `limit`)."""

    def __init__(self, message: str, count: int, limit: int) -> None:
        super().__init__(message)
        self.count = count
        self.limit = limit


class TooManyMaskPixels(RuntimeInputError):
    """A request whose masks (boxes x image pixels) exceed the predictor's budget: the work
    and the answer grow with both, so many boxes on a huge image are refused up front."""

    def __init__(self, message: str, pixels: int | None = None, limit: int | None = None
                 ) -> None:
        super().__init__(message)
        self.pixels = pixels
        self.limit = limit


class UnknownLabel(RuntimeInputError):
    """A label that names no category of the model; carries the names it knows."""

    def __init__(
        self, label: object, known_names: Sequence[str], known_ids: Sequence[int] = ()
    ) -> None:
        self.label = label
        self.known_names = list(known_names)
        self.known_ids = list(known_ids)
        super().__init__(
            f"unknown label {label!r}; known category names: {', '.join(self.known_names)}"
            + (f" (ids: {', '.join(map(str, self.known_ids))})" if self.known_ids else "")
        )


class UnknownImage(RuntimeInputError, KeyError):
    """An image key that is not (or no longer) in the predictor's cache: send the image again."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "unknown image"


class NoDetector(RuntimeInputError):
    """`detect` on a model exported without its detector graph: it can only segment given boxes.
    A property of the model, not a failure of it (the model stays ready for boxes)."""


class BackendUnavailable(RuntimeError):
    """The inference backend (ONNX Runtime session, Triton server) cannot serve requests."""


class ModelDirError(RuntimeError):
    """The exported model directory is missing files, has a bad model.json or a bad checksum."""


class ModelNotFound(ModelDirError):
    """A model name or folder (`--model`, `--model-dir`) that names no exported model: not a
    bundled name, not a folder holding a card; the message says what was found instead."""
