"""`MultiTaskModel.compile`'s arguments, resolved task by task.

A loss, a weight and a list of metrics per task, each built as `compile`
builds them for a plain model, each metric its own object named
`<task>_<metric>`; and the checks that give clear errors for tasks that do
not exist, tasks without a loss, and heads whose outputs do not fit their
losses.
"""

from __future__ import annotations

import dataclasses

import keras

from keras_transfer._checks import check_number
from keras_transfer._keras_internals.compile import compile_loss_object, compile_metric_object


@dataclasses.dataclass
class TaskCompile:
    """The per-task losses, loss weights and metrics of one `compile`."""

    losses: dict
    loss_weights: dict
    metrics: dict


def resolve_losses(tasks, loss, loss_weights) -> tuple[dict, dict]:
    """(losses, loss weights) per task; one loss given for all is shared."""
    if loss is None:
        raise ValueError(
            "Compile a MultiTaskModel with a loss per task, e.g. `loss={"
            + ", ".join(f"'{task}': ..." for task in tasks)
            + "}`, or one loss for every task."
        )
    if isinstance(loss, dict):
        _check_known(loss, tasks, "loss")
        missing = [task for task in tasks if loss.get(task) is None]
        if missing:
            raise ValueError(
                f"No loss for tasks {missing}: every head needs one to train. Add them to "
                f"`loss` (it has {sorted(loss)}), or build the model without those heads."
            )
    else:
        loss = {task: loss for task in tasks}
    losses = {task: _loss_object(task, loss[task]) for task in tasks}
    weights = {task: 1.0 for task in tasks}
    if loss_weights is not None:
        if not isinstance(loss_weights, dict):
            raise TypeError(
                f"`loss_weights` must be a dict of task name -> weight, got {loss_weights!r}."
            )
        _check_known(loss_weights, tasks, "loss_weights")
        for task, weight in loss_weights.items():
            weights[task] = check_number(
                weight, f"loss_weights['{task}']", "the weight of that task's loss", low=0
            )
    return losses, weights


def resolve_metrics(tasks, metrics, losses: dict, head_outputs: dict) -> dict:
    """A fresh list of metric objects per task, named `<task>_<metric>`.

    `head_outputs` maps each task to its head's symbolic output (it settles
    which accuracy `"accuracy"` means, with the labels the task's loss
    implies).
    """
    if metrics is None:
        return {task: [] for task in tasks}
    if isinstance(metrics, dict):
        _check_known(metrics, tasks, "metrics")
    else:
        metrics = {task: metrics for task in tasks}
    resolved = {}
    for task in tasks:
        given = metrics.get(task) or []
        given = list(given) if isinstance(given, (list, tuple)) else [given]
        resolved[task] = [
            _metric_object(task, metric, losses[task], head_outputs[task]) for metric in given
        ]
    return resolved


def check_head_fits_loss(task: str, loss, labels, predictions) -> None:
    """Raises if a head's output cannot be scored against its labels by its loss.

    Checks static shapes only (what is known when a step is traced); catches
    the mismatches Keras would otherwise broadcast silently, such as a
    3-unit head scored by binary cross-entropy against one label per example.
    """
    if not (hasattr(labels, "shape") and hasattr(predictions, "shape")):
        return
    label_shape, output_shape = tuple(labels.shape), tuple(predictions.shape)
    if not output_shape:
        return
    units = output_shape[-1]
    if is_sparse_loss(loss):
        fits = len(label_shape) == len(output_shape) - 1 or (
            len(label_shape) == len(output_shape) and label_shape[-1] in (1, None)
        )
        fits = fits and units != 1
    else:
        if len(label_shape) == len(output_shape) - 1:
            label_shape = (*label_shape, 1)
        fits = len(label_shape) == len(output_shape) and (
            None in (label_shape[-1], units) or label_shape[-1] == units
        )
    if not fits:
        raise ValueError(
            f"The head of task '{task}' outputs shape {output_shape}, but its labels have "
            f"shape {tuple(labels.shape)} and its loss is {_loss_name(loss)!r}. Make them "
            "agree: integer class ids go with 'sparse_categorical_crossentropy' and a "
            "head of one unit per class; one-hot or multi-label targets need labels of "
            f"the head's width; binary labels a head of 1 unit with 'binary_crossentropy'."
        )


def is_sparse_loss(loss) -> bool:
    """Whether `loss` takes integer class ids against one score per class."""
    return isinstance(loss, keras.losses.SparseCategoricalCrossentropy) or (
        "sparse" in _loss_name(loss)
    )


def _loss_name(loss) -> str:
    return str(getattr(loss, "name", None) or type(loss).__name__)


def _check_known(given: dict, tasks, argument: str) -> None:
    unknown = [task for task in given if task not in tasks]
    if unknown:
        raise ValueError(
            f"`{argument}` names tasks {unknown} that the model has no head for; its "
            f"tasks are {list(tasks)}. Fix the names, or add heads for them."
        )


def _loss_object(task: str, identifier):
    try:
        return compile_loss_object(identifier)
    except (ValueError, TypeError) as error:
        raise ValueError(f"The loss of task '{task}' ({identifier!r}): {error}") from None


def _metric_object(task: str, identifier, loss, head_output):
    if isinstance(identifier, keras.metrics.Metric):
        # A fresh copy per task: one metric object given for every task must
        # keep one state per task.
        identifier = type(identifier).from_config(identifier.get_config())
    output_shape = tuple(head_output.shape)
    label_shape = output_shape[:-1] if is_sparse_loss(loss) else output_shape
    try:
        metric = compile_metric_object(
            identifier, keras.KerasTensor(label_shape), keras.KerasTensor(output_shape)
        )
    except (ValueError, TypeError) as error:
        raise ValueError(f"A metric of task '{task}' ({identifier!r}): {error}") from None
    metric.name = f"{task}_{metric.name}"
    return metric
