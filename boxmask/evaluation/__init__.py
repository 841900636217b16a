"""Evaluation: COCO AP on unseen / seen / all categories, overlap subsets and bins, sources of
false positives, box-prompted mask IoU and AP, plots.

- :func:`evaluate_predictions` scores COCO-format results (no model, no torch).
- :mod:`boxmask.evaluation.run` runs a model: ``evaluate_model`` (in memory) and
  ``evaluate_checkpoint`` (``boxmask eval``).
"""

from boxmask.evaluation.evaluator import evaluate_predictions

__all__ = ["evaluate_predictions"]
