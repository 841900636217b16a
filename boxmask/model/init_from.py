"""Start a model from another checkpoint whose categories differ: ``model.init_from``.

The paper's setting as a user meets it: a model that knows some categories (COCO's, imported
from torchvision, or an earlier ``boxmask train``) and a dataset that mixes those categories,
with or without masks, and new ones with boxes only. Categories are matched by name
(case and spacing ignored). Every weight that does not depend on the category is copied; the
class-specific rows (``cls_score``, ``bbox_pred``, the student's ``mask_fcn_logits``) are
copied for matched categories. New categories keep the fresh initialisation of their box rows,
but their rows of the student's mask logits start class-agnostic: the checkpoint's teacher
channel where it has one, else the mean of its student channels. A new category's student
channel then begins where the teacher stands (which is what its pseudo-masks will teach it)
instead of at noise, so a short fine-tune spends its steps on the category's own shape rather
than on learning what a mask is (docs/results.md, fine-tuning).

The mask heads may differ between the two models, because the mode may: an imported model is
an ``oracle`` (student only), and a fine-tune in ``teacher_student`` mode needs a teacher. A
head missing from the checkpoint is derived from the other one when the shapes allow: the
teacher's conv tower and deconvolution from the student's, its single output channel as the
mean of the student's channels (a class-agnostic start that already knows what an object's
mask looks like); the other way round, every student channel starts as the teacher's. What
cannot be copied or derived keeps its fresh initialisation, and the report says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from boxmask.config import ConfigError

_CLS = "roi_heads.box_predictor.cls_score."
_BOX = "roi_heads.box_predictor.bbox_pred."
_STUDENT = "roi_heads.mask_branch.student."
_TEACHER = "roi_heads.mask_branch.teacher."
_ANCHOR = "roi_heads.mask_branch.anchor."
#: The state-dict prefix of the mask-quality head's weights (benchmarks strip or count them).
QUALITY_WEIGHTS = "roi_heads.mask_branch.quality."
_KNOWN = "roi_heads.mask_branch.known_labels"
_ROUND = ("roi_heads.mask_branch.round_head.", "roi_heads.mask_branch.round_ready")
_COUNTERS = ("train_steps",)
_LOGITS = "predictor.mask_fcn_logits."


@dataclass
class InitReport:
    """What :func:`init_from_checkpoint` did, for the training log and the tests."""

    matched: dict[str, str] = field(default_factory=dict)  # target name -> checkpoint name
    new: list[str] = field(default_factory=list)  # target categories the checkpoint lacks
    unused: list[str] = field(default_factory=list)  # checkpoint categories the data lacks
    copied: int = 0  # tensors copied whole or by rows
    derived: dict[str, str] = field(default_factory=dict)  # target key -> the key it came from
    fresh: list[str] = field(default_factory=list)  # target keys left at initialisation
    agnostic_start: list[str] = field(default_factory=list)  # new categories' mask rows so set

    def summary(self) -> str:
        parts = [f"{len(self.matched)} categories matched by name, {len(self.new)} new"
                 + (f" ({', '.join(self.new[:8])}{', ...' if len(self.new) > 8 else ''})"
                    if self.new else ""),
                 f"{self.copied} tensors copied"]
        if self.unused:
            parts.append(f"{len(self.unused)} checkpoint categories not in the data")
        if self.derived:
            heads = sorted({k.split(".")[2] for k in self.derived})
            parts.append(f"{' and '.join(heads)} head derived from the other head")
        if self.agnostic_start:
            parts.append(f"{len(self.agnostic_start)} new categories' mask channels start "
                         "class-agnostic")
        if self.fresh:
            parts.append(f"{len(self.fresh)} tensors fresh ({', '.join(self.fresh[:3])}"
                         f"{', ...' if len(self.fresh) > 3 else ''})")
        return "; ".join(parts)


def _norm(name: str) -> str:
    return " ".join(str(name).strip().lower().split())


def match_categories(target: Sequence[Mapping[str, Any]], source: Sequence[Mapping[str, Any]]
                     ) -> tuple[dict[int, int], InitReport]:
    """Target label -> source label for the categories both name; and the report's lists."""
    by_name: dict[str, Mapping[str, Any]] = {}
    for c in source:
        key = _norm(c["name"])
        if key in by_name:
            raise ConfigError(f"the checkpoint names two categories {c['name']!r}")
        by_name[key] = c
    report = InitReport()
    pairs: dict[int, int] = {}
    for c in target:
        hit = by_name.get(_norm(c["name"]))
        if hit is None:
            report.new.append(str(c["name"]))
        else:
            pairs[int(c["label"])] = int(hit["label"])
            report.matched[str(c["name"])] = str(hit["name"])
    taken = {_norm(n) for n in report.matched.values()}
    report.unused = [str(c["name"]) for c in source if _norm(c["name"]) not in taken]
    return pairs, report


def _class_rows(key: str, pairs: Mapping[int, int]) -> tuple[list[int], list[int]] | None:
    """(target rows, source rows) of a class-specific tensor, or None for any other key."""
    if key.startswith(_CLS):
        t, s = [0], [0]  # background stays background
        for tl, sl in pairs.items():
            t.append(tl)
            s.append(sl)
        return t, s
    if key.startswith(_BOX):
        t, s = list(range(4)), list(range(4))
        for tl, sl in pairs.items():
            t += [4 * tl + i for i in range(4)]
            s += [4 * sl + i for i in range(4)]
        return t, s
    if key.startswith(_STUDENT + _LOGITS):
        return [tl - 1 for tl in pairs], [sl - 1 for sl in pairs.values()]
    return None


def _agnostic_logits(key: str, state: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """One class-agnostic row of the student's mask logits (``key``: its weight or bias) from
    the checkpoint: its teacher's channel, else the mean of its student channels."""
    suffix = key[len(_STUDENT + _LOGITS):]
    teacher = state.get(_TEACHER + _LOGITS + suffix)
    if teacher is not None and teacher.shape[0] == 1:
        return teacher[0]
    student = state.get(key)
    return None if student is None else student.mean(dim=0)


def _is_mask_head(key: str) -> bool:
    return key.startswith((_STUDENT, _TEACHER))


def _derive(key: str, target: torch.Tensor, source: Mapping[str, torch.Tensor]
            ) -> tuple[torch.Tensor, str] | None:
    """A teacher tensor from the student's or a student tensor from the teacher's."""
    if key.startswith(_TEACHER):
        other = _STUDENT + key[len(_TEACHER):]
        if other not in source:
            return None
        value = source[other]
        if key.startswith(_TEACHER + _LOGITS):
            # C class channels -> one class-agnostic channel: their mean.
            value = value.mean(dim=0, keepdim=True)
    elif key.startswith(_STUDENT):
        other = _TEACHER + key[len(_STUDENT):]
        if other not in source:
            return None
        value = source[other]
        if key.startswith(_STUDENT + _LOGITS):
            value = value.expand(target.shape[0], *value.shape[1:])
    else:
        return None
    if value.shape != target.shape:
        return None
    return value.clone(), other


@torch.no_grad()
def init_from_checkpoint(model: nn.Module, categories: Sequence[Mapping[str, Any]],
                         checkpoint: Mapping[str, Any], source: str = "checkpoint") -> InitReport:
    """Load what fits of ``checkpoint`` into ``model`` (freshly built), by category name.

    Args:
        model: a freshly built boxmask model for ``categories``.
        categories: the model's categories, ``[{"name", "label"}]`` (labels 1..C).
        checkpoint: a boxmask checkpoint dict (``model`` and ``categories``).
        source: the checkpoint's path, for messages.
    Raises:
        ConfigError: the checkpoint has no categories, or a weight outside the mask heads and
            the class-specific rows is missing or has another shape (another backbone or
            another width in the config's model section).
    """
    if "model" not in checkpoint or "categories" not in checkpoint:
        raise ConfigError(f"model.init_from {source!r} is not a boxmask checkpoint (no model "
                          "or categories): write one with `boxmask train` or "
                          "`boxmask import torchvision`")
    state: Mapping[str, torch.Tensor] = checkpoint["model"]
    pairs, report = match_categories(categories, checkpoint["categories"])
    new_rows = [int(c["label"]) - 1 for c in categories if int(c["label"]) not in pairs]
    if not pairs:
        raise ConfigError(f"model.init_from {source!r}: none of its categories is named in the "
                          f"data ({', '.join(report.unused[:10])}, ...), so nothing "
                          "class-specific could be kept; check the category names")
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    misfits: list[str] = []
    for key, value in target.items():
        if key.startswith(_ROUND) or key.endswith(_COUNTERS):
            continue  # this run's own state (round head, step counters): it starts its own
        rows = _class_rows(key, pairs)
        if rows is not None and key in state:
            t_rows, s_rows = rows
            new = value.clone()
            new[t_rows] = state[key][s_rows].to(value.dtype)
            if key.startswith(_STUDENT + _LOGITS):
                start = _agnostic_logits(key, state)
                if start is not None and start.shape == value.shape[1:] and new_rows:
                    new[new_rows] = start.to(value.dtype)
                    report.agnostic_start = sorted(report.new)
            out[key] = new
            report.copied += 1
        elif key in state and state[key].shape == value.shape:
            out[key] = state[key]
            report.copied += 1
        elif _is_mask_head(key):
            got = _derive(key, value, state)
            if got is None:
                report.fresh.append(key)
            else:
                out[key], report.derived[key] = got
        elif key.endswith("num_batches_tracked"):
            pass  # counters: a fresh run starts its own
        elif key.startswith(_ANCHOR) or key == _KNOWN:
            pass  # a fine-tune's own anchor: set from the loaded student (anchor_known)
        elif key.startswith(QUALITY_WEIGHTS):
            report.fresh.append(key)  # a mask-quality head the checkpoint lacks starts fresh
        else:
            shape = tuple(state[key].shape) if key in state else "missing"
            misfits.append(f"{key} ({shape} in the checkpoint, {tuple(value.shape)} here)")
    if misfits:
        raise ConfigError(
            f"model.init_from {source!r} does not fit the config's model section: "
            f"{len(misfits)} weights differ, e.g. {'; '.join(misfits[:3])}. Use the checkpoint's "
            "backbone, widths and heads (its config is stored inside it)")
    model.load_state_dict({**target, **out})
    return report
