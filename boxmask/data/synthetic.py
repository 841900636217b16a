"""A synthetic COCO dataset of heavily overlapping textured shapes.

It builds the setting the paper is about: many objects per image, painted in depth order so
that most boxes hold parts of other objects, with masks of the *visible* parts only. A
class-agnostic mask head trained on some categories sees a box full of two textured shapes and
has to guess which one is meant; a class-specific head knows the shape of its class.

Scenes are piles (see :class:`SceneParams`): a base object with one or two slightly smaller
objects laid over its middle, several piles pressed against each other. That puts a
neighbour inside most boxes: about 43% of the instances have ``O >= 0.3`` (``O`` of
:mod:`boxmask.data.overlap`), reported per split in ``stats.json``.

Eight categories differ by shape *and* texture. Colour alone does not identify a class (the
palettes overlap), and the suggested split pairs every unseen category with a seen one of the
same texture kind, so texture alone does not either:

========  ========  ==========  =======================
seen      texture   unseen      look-alike texture of
========  ========  ==========  =======================
disc      noise     hexagon     disc
square    stripes   ring        square
triangle  checker   crescent    triangle
cross     dots      star        cross
========  ========  ==========  =======================

The ``extended`` shape set (``shapes="extended"``, :data:`EXTRA_CATEGORIES`) adds eight more
seen shapes, two of each texture kind (pentagon and semicircle: noise; frame and trapezoid:
stripes; heart and L: checker; arrow and T: dots), and keeps the same four unseen ones: it asks
how far a class-agnostic teacher's masks of unseen shapes improve when it has seen twelve
shapes instead of four.

The ``transfer`` shape set (``shapes="transfer"``, :data:`TRANSFER_CATEGORIES`) asks for
transfer instead: no unseen category has a seen look-alike in shape family or in texture kind,
and one unseen shape, the slab, nearly fills its box (about 97 % of it when whole):

========  ========  ===========  ==========  ========  ==========
seen      texture   family       unseen      texture   family
========  ========  ===========  ==========  ========  ==========
disc      noise     round        slab        gradient  box-filling
triangle  checker   polygon      wave        speckle   band
cross     dots      bars         zigzag      gradient  band
star      stripes   star         arch        speckle   band
========  ========  ===========  ==========  ========  ==========

Output (``generate``)::

    out/annotations/instances_train.json   out/images/train/000000.png ...
    out/annotations/instances_val.json     out/images/val/000000.png ...
    out/stats.json

Masks are compressed COCO RLE: exact (areas match the pixels), and unlike polygons they keep
the hole of a ring and every fragment of an occluded object. Everything is a function of the
seed: each image draws from its own ``numpy.random.Generator`` seeded by ``(seed, split,
index)``, PNGs are written with fixed settings, and the JSON holds no timestamps.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from boxmask.data.overlap import overlap_scores

# The generator's version: a split's bytes are a function of (version, seed, scene, size).
# 2: the cross is solid. Version 1 filled its two bars in one cv2.fillPoly call, whose
# even-odd rule leaves the square where they overlap empty (background in the image and in the
# mask, framed by one-pixel lines of the polygons' edges): every "cross" of a version-1 set is
# four arms around a hole. Everything else, the random draws included, is the same, so a
# version-2 scene differs from its version-1 twin in its crosses and in what they hide.
GENERATOR_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
OVERLAP_THRESHOLD = 0.3

# A muted-to-bright set of colours; each category draws from three, each colour serves three
# categories, so colour never names the class.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 48, 49), "orange": (235, 140, 30), "yellow": (238, 214, 52),
    "green": (46, 166, 76), "teal": (30, 160, 170), "blue": (52, 92, 214),
    "purple": (128, 64, 190), "magenta": (214, 60, 160),
}


@dataclass(frozen=True)
class ShapeCategory:
    id: int
    name: str
    texture: str  # noise | stripes | checker | dots | gradient | speckle
    palette: tuple[str, str, str]
    suggested_seen: bool
    # The shape's family (round, bars, band...), named only where a catalogue's split is
    # defined by it (``transfer``); the basic and extended categories leave it empty, and their
    # COCO records do not carry it (their bytes are those of every set made before it).
    family: str = ""


CATEGORIES: tuple[ShapeCategory, ...] = (
    ShapeCategory(1, "disc", "noise", ("red", "teal", "yellow"), True),
    ShapeCategory(2, "square", "stripes", ("blue", "orange", "green"), True),
    ShapeCategory(3, "triangle", "checker", ("magenta", "yellow", "teal"), True),
    ShapeCategory(4, "cross", "dots", ("purple", "green", "red"), True),
    ShapeCategory(5, "ring", "stripes", ("orange", "magenta", "blue"), False),
    ShapeCategory(6, "star", "dots", ("yellow", "purple", "blue"), False),
    ShapeCategory(7, "crescent", "checker", ("teal", "red", "purple"), False),
    ShapeCategory(8, "hexagon", "noise", ("green", "magenta", "orange"), False),
)

# Eight more seen shapes, two more of each texture kind, for the ``extended`` catalogue. The
# four unseen shapes stay the eight-shape set's, so a teacher that has seen twelve shapes is
# measured on the same unseen ones as one that has seen four. Some of the new shapes are
# relatives of an unseen one, as real seen classes are of unseen ones (dog and bear): the frame
# has a hole like the ring, the pentagon is a convex polygon like the hexagon, the semicircle a
# part of a disc like the crescent; none of them is an unseen shape's twin.
EXTRA_CATEGORIES: tuple[ShapeCategory, ...] = (
    ShapeCategory(9, "pentagon", "noise", ("blue", "yellow", "purple"), True),
    ShapeCategory(10, "semicircle", "noise", ("orange", "teal", "magenta"), True),
    ShapeCategory(11, "frame", "stripes", ("green", "red", "yellow"), True),
    ShapeCategory(12, "trapezoid", "stripes", ("purple", "teal", "orange"), True),
    ShapeCategory(13, "heart", "checker", ("red", "blue", "green"), True),
    ShapeCategory(14, "lshape", "checker", ("yellow", "magenta", "blue"), True),
    ShapeCategory(15, "arrow", "dots", ("teal", "orange", "green"), True),
    ShapeCategory(16, "tshape", "dots", ("magenta", "purple", "red"), True),
)

# The ``transfer`` catalogue: a split that asks for transfer rather than recognition of a
# look-alike. No unseen category shares a shape family or a texture kind with a seen one: the
# seen four are a round, a polygonal, a barred and a pointed shape in the four textures of the
# basic set; the unseen four are shapes of two families no seen shape belongs to (a box-filling
# slab, and bands: an S-shaped wave, a zigzag, an arch) in two textures no seen shape wears (a
# linear gradient, a per-pixel speckle). The slab is axis-aligned and fills about 97 % of its
# box: the case where a mask below the box itself is a loss, not a refinement.
TRANSFER_CATEGORIES: tuple[ShapeCategory, ...] = (
    ShapeCategory(1, "disc", "noise", ("red", "teal", "yellow"), True, "round"),
    ShapeCategory(2, "triangle", "checker", ("magenta", "yellow", "teal"), True, "polygon"),
    ShapeCategory(3, "cross", "dots", ("purple", "green", "red"), True, "bars"),
    ShapeCategory(4, "star", "stripes", ("yellow", "purple", "blue"), True, "star"),
    ShapeCategory(5, "slab", "gradient", ("green", "magenta", "orange"), False, "box-filling"),
    ShapeCategory(6, "wave", "speckle", ("orange", "red", "purple"), False, "band"),
    ShapeCategory(7, "zigzag", "gradient", ("teal", "blue", "magenta"), False, "band"),
    ShapeCategory(8, "arch", "speckle", ("blue", "orange", "green"), False, "band"),
)

# Shape catalogues (``boxmask data synth --shapes``): which categories a scene draws from.
# ``basic``, the default, is the eight of every set before it (its bytes are unchanged);
# ``extended`` adds :data:`EXTRA_CATEGORIES`: twelve seen shapes, the same four unseen;
# ``transfer`` is :data:`TRANSFER_CATEGORIES`: four seen, four unseen unlike any seen one.
SHAPE_SETS: dict[str, tuple[ShapeCategory, ...]] = {
    "basic": CATEGORIES,
    "extended": CATEGORIES + EXTRA_CATEGORIES,
    "transfer": TRANSFER_CATEGORIES,
}

_SPLIT_CODE = {"train": 0, "val": 1}


def _catalogue(shapes: str) -> tuple[ShapeCategory, ...]:
    if shapes not in SHAPE_SETS:
        raise ValueError(f"unknown shape set {shapes!r}; choose one of {', '.join(SHAPE_SETS)}")
    return SHAPE_SETS[shapes]


def coco_categories(shapes: str = "basic") -> list[dict[str, Any]]:
    """The COCO ``categories`` list, with each category's texture and suggested split (and its
    shape family, where the catalogue names one)."""
    return [{"id": c.id, "name": c.name, "supercategory": "shape", "texture": c.texture,
             "suggested_seen": c.suggested_seen, **({"family": c.family} if c.family else {})}
            for c in _catalogue(shapes)]


def suggested_split(shapes: str = "basic") -> dict[str, list[str]]:
    """The seen and unseen categories (``basic``: four and four, each unseen one with a seen
    texture look-alike; ``extended``: twelve seen, the same four unseen; ``transfer``: four
    and four, no unseen one sharing a shape family or a texture kind with a seen one)."""
    cats = _catalogue(shapes)
    return {"seen": [c.name for c in cats if c.suggested_seen],
            "unseen": [c.name for c in cats if not c.suggested_seen]}


# ---------------------------------------------------------------------------------------------
# Shapes: a full (unoccluded) mask per object, rasterised with sub-pixel vertices.

_SHIFT = 4  # cv2.fillPoly fixed-point bits: vertices at 1/16 pixel


def _regular(n: int, radius: float, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _fill(polys: list[np.ndarray], centre: np.ndarray, rot: np.ndarray, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), dtype=np.uint8)
    pts = [np.round((p @ rot.T + centre) * (1 << _SHIFT)).astype(np.int32) for p in polys]
    cv2.fillPoly(canvas, pts, 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return canvas.astype(bool)


def shape_mask(name: str, centre: np.ndarray, radius: float, angle: float,
               stretch: tuple[float, float], size: int, rng: np.random.Generator,
               version: int = GENERATOR_VERSION) -> np.ndarray:
    """``[size, size]`` bool mask of one shape of the given category (``version``: the
    generator's; 1 draws the hollow cross of :data:`GENERATOR_VERSION`'s note)."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]]) @ np.diag(stretch)

    def fill(*polys: np.ndarray) -> np.ndarray:
        return _fill(list(polys), centre, rot, size)

    if name == "disc":
        return fill(_regular(64, radius))
    if name == "square":
        return fill(_regular(4, radius * 1.2, np.pi / 4))
    if name == "triangle":
        return fill(_regular(3, radius * 1.3, -np.pi / 2))
    if name == "hexagon":
        return fill(_regular(6, radius * 1.05))
    if name == "cross":
        a, b = radius, radius * rng.uniform(0.3, 0.42)
        bars = (np.array([[-a, -b], [a, -b], [a, b], [-a, b]]),
                np.array([[-b, -a], [b, -a], [b, a], [-b, a]]))
        if version == 1:  # one fillPoly call: the bars' overlap is a hole (even-odd rule)
            return fill(*bars)
        return fill(bars[0]) | fill(bars[1])
    if name == "star":
        outer = _regular(5, radius * 1.2, -np.pi / 2)
        inner = _regular(5, radius * 1.2 * rng.uniform(0.42, 0.52), -np.pi / 2 + np.pi / 5)
        return fill(np.stack([outer, inner], axis=1).reshape(-1, 2))
    if name == "ring":
        hole = rng.uniform(0.45, 0.62)
        return fill(_regular(64, radius)) & ~fill(_regular(64, radius * hole))
    if name == "crescent":
        # A disc shifted right (an array plus an offset, not a list concatenation).
        bite = (_regular(64, radius * rng.uniform(0.8, 0.95))
                + np.array([radius * rng.uniform(0.45, 0.6), 0]))
        return fill(_regular(64, radius)) & ~fill(bite)
    # The extended catalogue's shapes (EXTRA_CATEGORIES), each about as large as the others.
    if name == "pentagon":
        return fill(_regular(5, radius * 1.1, -np.pi / 2))
    if name == "semicircle":  # the flat side through the centre, the centroid 0.42 r above it
        t = np.linspace(0.0, np.pi, 33)
        r = radius * 1.3
        return fill(np.stack([r * np.cos(t), 0.42 * r - r * np.sin(t)], axis=1))
    if name == "frame":  # a square with a square hole
        hole = rng.uniform(0.45, 0.62)
        return fill(_regular(4, radius * 1.2, np.pi / 4)) & ~fill(_regular(4, radius * 1.2 * hole, np.pi / 4))
    if name == "trapezoid":
        a, b = radius * 1.2, radius * 0.85
        return fill(np.array([[-a, b], [a, b], [0.5 * a, -b], [-0.5 * a, -b]]))
    if name == "heart":
        t = np.linspace(0.0, 2 * np.pi, 65)[:-1]
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) - 2.0
        return fill(np.stack([x, y], axis=1) * (radius * 1.15 / 16))
    if name == "lshape":
        a = radius * 1.05
        w = a * rng.uniform(0.75, 0.95)  # arm width, of the side 2a
        return fill(np.array([[-a, -a], [-a + w, -a], [-a + w, a - w], [a, a - w], [a, a], [-a, a]]))
    if name == "arrow":
        a, s, hw, h = radius * 1.2, radius * 0.32, radius * 0.85, radius * 0.15
        return fill(np.array([[-a, -s], [h, -s], [h, -hw], [a, 0], [h, hw], [h, s], [-a, s]]))
    if name == "tshape":
        a = radius * 1.05
        t = a * rng.uniform(0.65, 0.85)  # bar and stem width
        top = np.array([[-a, -a], [a, -a], [a, -a + t], [-a, -a + t]])
        stem = np.array([[-t / 2, -a], [t / 2, -a], [t / 2, a], [-t / 2, a]])
        return fill(top) | fill(stem)
    # The transfer catalogue's unseen shapes (TRANSFER_CATEGORIES).
    if name == "slab":  # axis-aligned (the angle is not used): it nearly fills its box
        a = radius * 0.9
        b = a * rng.uniform(0.65, 1.0)
        if rng.random() < 0.5:
            a, b = b, a
        corner = min(a, b) * rng.uniform(0.12, 0.25)
        arcs = []
        for (sx, sy), start in (((1, 1), 0.0), ((-1, 1), 0.5), ((-1, -1), 1.0), ((1, -1), 1.5)):
            t = np.pi * (start + np.linspace(0.0, 0.5, 9))
            arcs.append(np.stack([sx * (a - corner) + corner * np.cos(t),
                                  sy * (b - corner) + corner * np.sin(t)], axis=1))
        return _fill([np.concatenate(arcs)], centre, np.diag(stretch), size)
    if name in ("wave", "zigzag"):  # a band of constant height along a curve
        a = radius * 1.3
        half = radius * rng.uniform(0.38, 0.46)
        if name == "wave":  # one period of a sine: an S
            x = np.linspace(-a, a, 33)
            y = radius * rng.uniform(0.3, 0.42) * np.sin(np.pi * x / a)
        else:  # two zigs and two zags, sharp corners
            x = np.linspace(-a, a, 5)
            y = radius * rng.uniform(0.3, 0.4) * np.array([-1.0, 1.0, -1.0, 1.0, -1.0])
        top, bottom = np.stack([x, y - half], axis=1), np.stack([x, y + half], axis=1)[::-1]
        return fill(np.concatenate([top, bottom]))
    if name == "arch":  # a thick upside-down U: a half ring on two legs
        outer = radius * 1.1
        inner = outer * rng.uniform(0.45, 0.6)
        legs = radius * rng.uniform(0.6, 0.9)
        t = np.linspace(np.pi, 2 * np.pi, 33)  # y grows downwards: the arc is on top
        shift = (legs - outer) / 2  # centre the box on the centre
        out_path = np.concatenate([[[-outer, legs]], np.stack([outer * np.cos(t), outer * np.sin(t)], 1),
                                   [[outer, legs]]])
        in_path = np.concatenate([[[inner, legs]], np.stack([inner * np.cos(t), inner * np.sin(t)], 1)[::-1],
                                  [[-inner, legs]]])
        return fill(np.concatenate([out_path, in_path]) - [0.0, shift])
    raise ValueError(f"unknown shape {name!r}")


# ---------------------------------------------------------------------------------------------
# Textures: two palette colours in a pattern, in the object's own frame so it turns with it.

def _jitter(colour: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.asarray(colour, dtype=np.float32) + rng.uniform(-18, 18, 3), 0, 255)


def texture(kind: str, palette: tuple[str, str, str], centre: np.ndarray,
            window: tuple[int, int, int, int], rng: np.random.Generator,
            contrast: float = 1.0) -> np.ndarray:
    """``[y1 - y0, x1 - x0, 3]`` float32 texture of one object over ``window = (x0, y0, x1, y1)``;
    ``contrast`` scales the second colour's distance from the first."""
    x0, y0, x1, y1 = window
    first, second = rng.choice(3, size=2, replace=False)
    fg, bg = _jitter(COLOURS[palette[first]], rng), _jitter(COLOURS[palette[second]], rng)
    if contrast != 1.0:  # (at 1 the arithmetic is skipped: dense datasets keep their bytes)
        bg = fg + contrast * (bg - fg)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    a = rng.uniform(0, np.pi)
    u = (xs - centre[0]) * math.cos(a) + (ys - centre[1]) * math.sin(a)
    v = -(xs - centre[0]) * math.sin(a) + (ys - centre[1]) * math.cos(a)
    # Pattern scale follows the object, not the image, so small images keep visible textures.
    period = max(2.5, float(np.hypot(x1 - x0, y1 - y0)) * rng.uniform(0.09, 0.15))
    if kind == "stripes":
        sel = np.mod(u / period, 1.0) < 0.5
    elif kind == "checker":
        sel = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    elif kind == "dots":
        du, dv = np.mod(u, period * 1.4) - period * 0.7, np.mod(v, period * 1.4) - period * 0.7
        sel = du * du + dv * dv < (period * 0.42) ** 2
    elif kind == "noise":
        cells = (max(2, round((y1 - y0) / period)), max(2, round((x1 - x0) / period)))
        field = cv2.resize(rng.random(cells, dtype=np.float32), (x1 - x0, y1 - y0),
                           interpolation=cv2.INTER_LINEAR)
        sel = field < 0.5
    elif kind == "gradient":  # no pattern: the first colour fades into the second across it
        ramp = np.clip(0.5 + u / max(1.0, float(np.hypot(x1 - x0, y1 - y0))), 0.0, 1.0)
        return fg + ramp[..., None] * (bg - fg)
    elif kind == "speckle":  # pixel-sized grain, far finer than any other texture's period
        sel = rng.random((y1 - y0, x1 - x0), dtype=np.float32) < 0.5
    else:
        raise ValueError(f"unknown texture {kind!r}")
    return np.where(sel[..., None], fg, bg)


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """``[size, size, 3]`` float32: a muted colour field with faint unannotated clutter."""
    base = rng.uniform(95, 165, 3).astype(np.float32)
    field = cv2.resize(rng.uniform(-22, 22, (6, 6, 3)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    img = np.ascontiguousarray(base + field)
    for _ in range(int(rng.integers(4, 10))):  # thin lines and small blobs, low contrast
        colour = tuple(float(x) for x in base + rng.uniform(-45, 45, 3))
        p1 = tuple(int(x) for x in rng.integers(0, size, 2))
        if rng.random() < 0.6:
            p2 = tuple(int(x) for x in rng.integers(0, size, 2))
            cv2.line(img, p1, p2, colour, thickness=int(rng.integers(1, 3)), lineType=cv2.LINE_8)
        else:
            cv2.circle(img, p1, int(rng.integers(2, max(3, size // 40))), colour, -1, cv2.LINE_8)
    return img


# ---------------------------------------------------------------------------------------------
# Scenes

@dataclass
class Instance:
    category: ShapeCategory
    mask: np.ndarray  # visible part, [size, size] bool
    full_area: int


@dataclass(frozen=True)
class SceneParams:
    """How objects are sized and piled (fractions of the image side unless said otherwise).

    A scene is a few *stacks*: a base object with smaller ones laid on top near its middle, so
    the base's box holds the objects on it and a top object's box holds the base around it.
    Stacks are placed against each other, so boxes also reach into the neighbouring stack.
    """

    min_objects: int = 4
    max_objects: int = 9
    stack_depth: tuple[int, int] = (2, 3)
    base_radius: tuple[float, float] = (0.11, 0.22)
    # Radius of an object over the one beneath it: large enough that the top object fills a
    # good part of the base's box, small enough that the base stays visible around it.
    shrink: tuple[float, float] = (0.72, 0.92)
    offset: tuple[float, float] = (0.0, 0.12)  # centre shift / radius of the one beneath
    # Centre distance of a new stack to an earlier one, over the sum of their base radii.
    spacing: tuple[float, float] = (0.8, 1.3)
    stretch: tuple[float, float] = (0.7, 1.35)  # per-axis stretch before rotation
    min_visible_fraction: float = 0.2
    # How far an object's second texture colour lies from its first (1 = the palette colour,
    # 0 = a flat object). Lower contrast keeps the texture (which names the texture kind) but
    # makes an object's own pattern edges fainter than the edges between objects.
    texture_contrast: float = 1.0


# Named scene presets (``boxmask data synth --scene``):
# - ``dense``: the first generator's piles (2-3 deep, 4-9 objects, full-contrast textures). On
#   it even the oracle stays within a few points of the box at the CPU budget
#   (docs/results.md), so it is kept as the harder second set.
# - ``clear``: the headline set. Fewer, larger objects, piles at most two deep with the top
#   object off-centre (both shapes stay readable), softer textures, and fragments under 35 % of
#   their object dropped; neighbours still press into each other's boxes, so about 36 % of the
#   instances keep O >= 0.3 and a class-agnostic head still has to guess which object is meant
#   (box as mask: mean IoU about 0.46; dense: 0.41).
SCENES: dict[str, SceneParams] = {
    "dense": SceneParams(),
    "clear": SceneParams(min_objects=4, max_objects=7, stack_depth=(2, 2),
                         base_radius=(0.14, 0.26), shrink=(0.7, 0.9), offset=(0.15, 0.45),
                         spacing=(0.7, 1.05), stretch=(0.8, 1.25), min_visible_fraction=0.35,
                         texture_contrast=0.35),
}


def _layout(size: int, rng: np.random.Generator, params: SceneParams) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``[K, 2]`` and radii ``[K]`` in painting order (back to front)."""
    count = int(rng.integers(params.min_objects, params.max_objects + 1))
    centres: list[np.ndarray] = []
    radii: list[float] = []
    bases: list[tuple[np.ndarray, float]] = []
    while len(radii) < count:
        r = size * rng.uniform(*params.base_radius)
        if bases:
            anchor, anchor_r = bases[int(rng.integers(0, len(bases)))]
            t = rng.uniform(0, 2 * np.pi)
            c = anchor + rng.uniform(*params.spacing) * (anchor_r + r) * np.array([math.cos(t), math.sin(t)])
        else:
            c = rng.uniform(0.35, 0.65, 2) * size
        c = np.clip(c, 0.1 * size, 0.9 * size)
        bases.append((c, r))
        depth = int(rng.integers(params.stack_depth[0], params.stack_depth[1] + 1))
        for _ in range(min(depth, count - len(radii))):
            centres.append(c)
            radii.append(r)
            t = rng.uniform(0, 2 * np.pi)
            c = c + rng.uniform(*params.offset) * r * np.array([math.cos(t), math.sin(t)])
            r = r * rng.uniform(*params.shrink)
    return np.stack(centres), np.asarray(radii)


def render_scene(size: int, rng: np.random.Generator, params: SceneParams = SceneParams(),
                 version: int = GENERATOR_VERSION,
                 shapes: str = "basic") -> tuple[np.ndarray, list[Instance], int]:
    """One image: ``(uint8 [size, size, 3] RGB, visible instances, number dropped as hidden)``.

    Objects are painted back to front in the order of :func:`_layout`; an instance is kept
    when enough of it (``min_visible_fraction`` and a minimum number of pixels) stays visible.
    ``shapes`` names the catalogue of :data:`SHAPE_SETS` the objects' categories are drawn from.
    """
    catalogue = _catalogue(shapes)
    centres, radii = _layout(size, rng, params)
    count = len(radii)
    cats = [catalogue[int(i)] for i in rng.integers(0, len(catalogue), count)]
    image = background(size, rng)
    full = []
    for k in range(count):  # painting order = depth order, back to front
        stretch = (float(rng.uniform(*params.stretch)), float(rng.uniform(*params.stretch)))
        mask = shape_mask(cats[k].name, centres[k], radii[k], float(rng.uniform(0, 2 * np.pi)),
                          stretch, size, rng, version)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        full.append(mask)
        if rows.size == 0:
            continue
        x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
        tex = texture(cats[k].texture, cats[k].palette, centres[k], (x0, y0, x1, y1), rng,
                      params.texture_contrast)
        crop = mask[y0:y1, x0:x1]
        image[y0:y1, x0:x1][crop] = tex[crop]
    image += rng.normal(0, 2.0, image.shape).astype(np.float32)  # sensor-like noise
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    min_pixels = max(16, int((0.03 * size) ** 2))
    covered = np.zeros((size, size), dtype=bool)
    kept: list[Instance] = []
    dropped = 0
    for k in reversed(range(count)):  # front to back: what is in front hides what is behind
        visible = full[k] & ~covered
        covered |= full[k]
        full_area, area = int(full[k].sum()), int(visible.sum())
        if full_area == 0:
            continue
        if area >= min_pixels and area >= params.min_visible_fraction * full_area:
            kept.append(Instance(cats[k], visible, full_area))
        else:
            dropped += 1
    kept.reverse()
    return image, kept, dropped


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=3, optimize=False)
    return buf.getvalue()


def _write_split(root: Path, split: str, num_images: int, seed: int, size: int,
                 params: SceneParams, version: int, shapes: str = "basic") -> dict[str, Any]:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    overlaps: list[float] = []
    per_category: Counter[str] = Counter()
    dropped = 0
    for index in range(num_images):
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
        image, instances, hidden = render_scene(size, rng, params, version, shapes)
        dropped += hidden
        file_name = f"{index:06d}.png"
        (image_dir / file_name).write_bytes(_png_bytes(image))
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        if not instances:
            continue
        masks = np.stack([inst.mask for inst in instances])
        rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        boxes = mask_utils.toBbox(rles)  # [N, 4] xywh of the visible part, whole pixels
        scores = overlap_scores(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1), masks)
        for inst, rle, box, score in zip(instances, rles, boxes, scores, strict=True):
            per_category[inst.category.name] += 1
            overlaps.append(float(score))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": inst.category.id,
                "segmentation": {"size": [size, size], "counts": rle["counts"].decode("ascii")},
                "area": int(mask_utils.area(rle)),
                "bbox": [float(x) for x in box],
                "iscrowd": 0,
                # O_i of boxmask.data.overlap, kept for analysis; COCO tools ignore extra keys.
                "overlap": round(float(score), 4),
                "visible_fraction": round(int(inst.mask.sum()) / inst.full_area, 4),
            })
    coco = {
        "info": {"description": "boxmask synthetic overlapping shapes", "version": str(version),
                 "seed": seed, "split": split, "suggested_split": suggested_split(shapes)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(shapes),
    }
    (root / "annotations").mkdir(exist_ok=True)
    text = json.dumps(coco, separators=(",", ":"))
    (root / "annotations" / f"instances_{split}.json").write_text(text)
    scores_arr = np.asarray(overlaps)
    return {
        "images": num_images,
        "instances": len(annotations),
        "instances_per_image": round(len(annotations) / max(num_images, 1), 3),
        "hidden_instances_dropped": dropped,
        "per_category": {c.name: per_category[c.name] for c in _catalogue(shapes)},
        "overlap_share": round(float((scores_arr >= OVERLAP_THRESHOLD).mean()) if overlaps else 0.0, 4),
        "mean_overlap": round(float(scores_arr.mean()) if overlaps else 0.0, 4),
    }


class OutputNotEmpty(FileExistsError):
    """:func:`generate`'s ``out`` already holds files and ``overwrite`` is False; ``path`` is
    that folder (the CLI names its own flag instead of the keyword)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is not empty; pass overwrite=True to replace it")
        self.path = path


def ensure_generated(out: str | Path, seed: int = 0, num_train: int = 400, num_val: int = 100,
                     image_size: int = 256, scene: str = "dense",
                     version: int = GENERATOR_VERSION, shapes: str = "basic") -> dict[str, Any]:
    """:func:`generate` unless ``out`` already holds this very set, and return its statistics.

    A set is this one when its ``stats.json`` records the same generator version, seed, image
    size, scene, shape set and image counts (the generator is deterministic in them). A folder made with
    another recipe is refused, never reused or overwritten: scripts that share a data folder
    (the recipe ablation, the three-seed experiment, the demo build) cannot train on a set other
    than the one their results name.

    Raises:
        ValueError: ``out`` holds a set of another recipe (the message names the difference), or
            bad arguments (as :func:`generate`).
        FileExistsError: ``out`` is a non-empty folder without ``stats.json``.
    """
    stats_file = Path(out) / "stats.json"
    if not stats_file.is_file():
        return generate(out, seed=seed, num_train=num_train, num_val=num_val,
                        image_size=image_size, scene=scene, version=version, shapes=shapes)
    stats = json.loads(stats_file.read_text())
    splits = stats.get("splits") or {}
    have = {"generator version": stats.get("generator_version", 1), "seed": stats.get("seed"),
            "image size": stats.get("image_size"), "scene": stats.get("scene_name", "dense"),
            "shape set": stats.get("shapes", "basic"),
            "training images": (splits.get("train") or {}).get("images"),
            "validation images": (splits.get("val") or {}).get("images")}
    want = {"generator version": version, "seed": seed, "image size": image_size,
            "scene": scene, "shape set": shapes, "training images": num_train, "validation images": num_val}
    differ = [f"{k} {have[k]!r} (wanted {want[k]!r})" for k in want if have[k] != want[k]]
    if differ:
        raise ValueError(f"{out} holds another synthetic set: {', '.join(differ)}; move it aside "
                         "(or pick another folder) and rerun")
    return stats


def generate(out: str | Path, seed: int = 0, num_train: int = 400, num_val: int = 100,
             image_size: int = 256, overwrite: bool = False, scene: str = "dense",
             version: int = GENERATOR_VERSION, shapes: str = "basic") -> dict[str, Any]:
    """Write the dataset to ``out`` and return its statistics (also in ``out/stats.json``).

    ``scene`` names one of :data:`SCENES` (``dense``, the default, or ``clear``). ``version``
    is the generator's (:data:`SUPPORTED_VERSIONS`; the newest by default): an older one
    rebuilds, byte for byte, a set that results were measured on. ``shapes`` names the shape
    catalogue (:data:`SHAPE_SETS`: ``basic``, the eight shapes, ``extended``, twelve seen
    and the same four unseen, or ``transfer``, four seen and four unseen unlike any seen one);
    ``basic`` sets do not record it, so their bytes are those of every set made before the
    option existed.

    The folder appears complete or not at all: everything is written into a temporary sibling
    folder that is renamed into place. An existing non-empty ``out`` is refused unless
    ``overwrite``.

    Raises:
        ValueError: bad sizes or counts.
        OutputNotEmpty: ``out`` exists, is not empty, and ``overwrite`` is False (a
            ``FileExistsError``, as is ``out`` being a file).
    """
    out = Path(out)
    if image_size < 32:
        raise ValueError(f"image size must be at least 32 pixels, got {image_size}")
    if num_train < 1 or num_val < 0:
        raise ValueError(f"need at least one training image and no negative counts "
                         f"(got {num_train} train, {num_val} val)")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; choose one of {', '.join(SCENES)}")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"unknown generator version {version!r}; choose one of "
                         f"{', '.join(map(str, SUPPORTED_VERSIONS))}")
    _catalogue(shapes)  # refuses an unknown shape set before anything is written
    params = SCENES[scene]
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputNotEmpty(out)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        stats: dict[str, Any] = {
            "generator_version": version,
            "seed": seed,
            "image_size": image_size,
            "overlap_threshold": OVERLAP_THRESHOLD,
            "overlap_definition": "O_i = max_j |box_i ∩ visible_mask_j| / |box_i|, j another "
                                  "instance of the image",
            "categories": coco_categories(shapes),
            "suggested_split": suggested_split(shapes),
            "scene_name": scene,
            "scene": asdict(params),
            "splits": {split: _write_split(tmp, split, n, seed, image_size, params, version, shapes)
                       for split, n in (("train", num_train), ("val", num_val))},
        }
        if shapes != "basic":
            stats["shapes"] = shapes
        text = json.dumps(stats, indent=2) + "\n"
        (tmp / "stats.json").write_text(text)
        stats = json.loads(text)  # what the file holds (tuples become lists)
        if out.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / out.name)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stats
