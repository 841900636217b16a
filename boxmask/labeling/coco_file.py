"""Reading the input COCO file, and refusing one that cannot be labeled before any work starts.

A COCO file comes from anywhere (an export, a script, a stranger), and a value the labeler
cannot use must stop the job up front with every bad record named, not crash it after the
journal exists: an image id of NaN cannot be journaled, a list as an id cannot be looked up,
a lone surrogate in a file name cannot name a file. `read_coco` parses the file (refusing
nesting deep enough to exhaust the parser's stack) and checks it against the pydantic models
below; everything else an annotation holds (boxes, segmentations, unknown fields) is left to
the plan, which marks what it cannot use per annotation, and is written back as it was read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError
from pydantic_core import PydanticCustomError

from boxmask.config import ConfigError

# A COCO instances file nests five deep (file, annotations, annotation, segmentation, polygon).
# Python's parser recurses once per level and raises RecursionError (or, with a raised
# recursion limit, overflows the C stack) on a file of brackets: such a file is refused by a
# scan before it is parsed.
MAX_JSON_DEPTH = 100
# Problems listed in the error message; the `CocoFileError` holds them all.
MAX_LISTED_PROBLEMS = 50


class CocoFileError(ConfigError):
    """The input is not a COCO file the labeler can use; `problems` lists every bad record as
    ``"annotations[12].image_id: must be an integer, got a list"``."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def _file_name(text: str) -> str:
    # JSON's \ud800 escapes can carry half of a surrogate pair, which no file system name or
    # UTF-8 journal line can hold; \u0000 can carry a NUL, which no file name has.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode (it holds a lone surrogate, a \\udXXX escape "
                         "without its pair)") from None
    if "\0" in text:
        raise ValueError("holds a NUL character, which no file name can")
    return text


def _image_side(value: Any) -> Any:
    # Only compared with the decoded image's size; 640.0 from a float-typed exporter is 640.
    if value is None:
        return value
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value < 1:
        raise ValueError("must be a positive integer (or null)")
    return value


def _annotation_id(value: Any) -> Any:
    # Annotation ids are only echoed (in the report), never looked up: any integer or string.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PydanticCustomError("id_type", "must be an integer or a string")
    return value


FileName = Annotated[StrictStr, AfterValidator(_file_name)]
Size = Annotated[Any, AfterValidator(_image_side)]


class CocoImage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt
    file_name: FileName
    # What the annotations were made on; an image of another size is skipped, not relabeled.
    width: Size = None
    height: Size = None


class CocoAnnotation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Annotated[Any, AfterValidator(_annotation_id)]
    image_id: StrictInt
    # No category: the plan marks the annotation unknown_category. The box, iscrowd and the
    # segmentation are judged per annotation by the plan (no_box, invalid_box, crowd, ...).
    category_id: StrictInt | None = None


class CocoCategory(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt
    name: StrictStr


class CocoFile(BaseModel):
    """What the labeler relies on in a COCO instances file; other keys are kept, unchecked."""

    model_config = ConfigDict(extra="ignore")

    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory]


def json_nesting_depth(data: bytes) -> int:
    """How deep arrays and objects nest in the JSON text `data`, without parsing it (brackets
    inside strings do not count). Linear in the size, in numpy: a scan of a large file costs
    a fraction of its parse."""
    buf = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(buf == ord('"'))
    backslashes = np.flatnonzero(buf == ord("\\"))
    if quotes.size and backslashes.size:
        # A quote after an odd run of backslashes is a character of its string, not its end.
        run_start = np.ones(backslashes.size, dtype=bool)
        run_start[1:] = np.diff(backslashes) != 1
        starts = np.maximum.accumulate(np.where(run_start, np.arange(backslashes.size), 0))
        after = np.searchsorted(backslashes, quotes - 1)
        after_clipped = np.minimum(after, backslashes.size - 1)
        preceded = (after < backslashes.size) & (backslashes[after_clipped] == quotes - 1)
        run_length = quotes - backslashes[starts[after_clipped]]
        quotes = quotes[~(preceded & (run_length % 2 == 1))]
    brackets = np.flatnonzero((buf == ord("[")) | (buf == ord("{"))
                              | (buf == ord("]")) | (buf == ord("}")))
    outside = np.searchsorted(quotes, brackets) % 2 == 0
    brackets = brackets[outside]
    if not brackets.size:
        return 0
    opens = (buf[brackets] == ord("[")) | (buf[brackets] == ord("{"))
    return int(np.cumsum(np.where(opens, 1, -1)).max(initial=0))


def _describe(value: Any) -> str:
    """A short, safe rendering of a bad value for the message (never a megabyte of it)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "an infinite number (out of range)"
        return repr(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else "a huge integer"
    if isinstance(value, str):
        # repr escapes what cannot be printed, a lone surrogate included.
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_MESSAGES = {
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "missing": "is missing",
}


def _location(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(error: Any) -> str:
    kind = error.get("type", "")
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error.get("msg", "")))
    else:
        message = _MESSAGES.get(kind, error.get("msg", ""))
    where = _location(error.get("loc", ())) or "the top level"
    if kind != "missing":
        message += f", got {_describe(error.get('input'))}"
    return f"{where}: {message}"


def check_coco(coco: Any, source: str) -> None:
    """Raise `CocoFileError` naming every record of `coco` the labeler cannot use."""
    if not isinstance(coco, dict):
        raise CocoFileError(f"{source} is not a COCO file: the top level is not a JSON object")
    try:
        CocoFile.model_validate(coco)
        problems: list[str] = []
    except ValidationError as exc:
        problems = [_problem(e) for e in exc.errors(include_url=False)]
    if not problems:
        first: dict[int, int] = {}
        for i, image in enumerate(coco["images"]):
            j = first.setdefault(image["id"], i)
            if j != i:
                problems.append(f"images[{i}].id: {image['id']} is also the id of images[{j}] "
                                "(image ids must be unique)")
    if problems:
        listed = problems[:MAX_LISTED_PROBLEMS]
        more = (f"\n  ... and {len(problems) - len(listed)} more"
                if len(problems) > len(listed) else "")
        noun = "problem" if len(problems) == 1 else "problems"
        raise CocoFileError(f"{source} is not a COCO instances file boxmask can label "
                            f"({len(problems)} {noun}; nothing was labeled):\n  "
                            + "\n  ".join(listed) + more, problems)


def read_coco(path: Path) -> tuple[bytes, dict[str, Any]]:
    """``(the file's bytes, the parsed COCO dict)``; raises `CocoFileError` (a `ConfigError`)
    for a file that is not JSON, nests too deep, or has records the labeler cannot use."""
    data = Path(path).read_bytes()
    depth = json_nesting_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise CocoFileError(f"{path} nests arrays and objects {depth} levels deep; a COCO file "
                            f"needs about 5, and more than {MAX_JSON_DEPTH} is refused unread")
    try:
        coco = json.loads(data)
    except RecursionError:  # the scan above is the guard; this is its backstop
        raise CocoFileError(f"{path} nests arrays and objects too deeply to be read") from None
    except (ValueError, UnicodeDecodeError) as exc:
        # JSONDecodeError is a ValueError, as is an integer of more than 4300 digits.
        raise CocoFileError(f"{path} is not valid JSON: {exc}") from None
    check_coco(coco, str(path))
    return data, coco
