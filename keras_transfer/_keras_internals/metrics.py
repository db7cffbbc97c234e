"""Metrics: which way a metric improves."""

from __future__ import annotations

import keras


def metric_direction(metric: keras.metrics.Metric) -> str | None:
    """`"up"` when a higher value of `metric` is better, `"down"` when lower, else `None`.

    Keras records this on its built-in metrics (accuracies, AUC, F-scores go
    up; errors, cross-entropies and a `MeanMetricWrapper` around a Keras loss
    function go down) for tuners to read; a metric written by hand has none.
    Relies on the `Metric._direction` attribute those metrics set in their
    `__init__`.
    """
    direction = getattr(metric, "_direction", None)
    return direction if direction in ("up", "down") else None
