"""Evaluation metrics, following each benchmark's official protocol (named in each module's docstring)."""

from __future__ import annotations

from vlalign.metrics.refseg import RefSegEvaluator, read_prediction_png, score_predictions

__all__ = ["RefSegEvaluator", "read_prediction_png", "score_predictions"]
