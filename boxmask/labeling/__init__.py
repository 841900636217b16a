"""Batch pseudo-labeling: a box-only COCO dataset in, the same dataset with class-specific masks
out, through the torch-free runtime (`boxmask.runtime`).

`run_label_job(LabelOptions(...))` is `boxmask label` as a function.
"""

from boxmask.labeling.job import run_label_job
from boxmask.labeling.journal import JournalError
from boxmask.labeling.options import LabelOptions, LabelSettings

__all__ = ["JournalError", "LabelOptions", "LabelSettings", "run_label_job"]
