import keras
import pytest

from keras_transfer.multitask._task_compile import (
    check_head_fits_loss,
    resolve_losses,
    resolve_metrics,
)

TASKS = ["topics", "flags"]
SPARSE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def spec(*shape):
    return keras.KerasTensor(shape)


@pytest.mark.parametrize(
    "loss, labels, outputs",
    [
        (SPARSE, (None,), (None, 3)),
        ("sparse_categorical_crossentropy", (None, 1), (None, 3)),
        ("categorical_crossentropy", (None, 3), (None, 3)),
        ("binary_crossentropy", (None,), (None, 1)),
        ("mse", (None, 1), (None, 1)),
        ("mse", (None, None), (None, 4)),
    ],
)
def test_heads_that_fit_their_losses_pass(loss, labels, outputs):
    loss = resolve_losses(["t"], loss, None)[0]["t"]
    check_head_fits_loss("t", loss, spec(*labels), spec(*outputs))


@pytest.mark.parametrize(
    "loss, labels, outputs",
    [
        ("binary_crossentropy", (None,), (None, 3)),  # Would broadcast silently.
        ("categorical_crossentropy", (None,), (None, 3)),
        ("mse", (None, 3), (None, 1)),
        (SPARSE, (None,), (None, 1)),  # One unit: no classes to choose from.
        (SPARSE, (None, 3), (None, 3)),  # One-hot labels with a sparse loss.
    ],
)
def test_heads_that_do_not_fit_their_losses_are_named_with_the_fix(loss, labels, outputs):
    loss = resolve_losses(["t"], loss, None)[0]["t"]
    with pytest.raises(ValueError, match="head of task 't' outputs shape.*Make them agree"):
        check_head_fits_loss("t", loss, spec(*labels), spec(*outputs))


def test_one_loss_serves_every_task_and_weights_default_to_one():
    losses, weights = resolve_losses(TASKS, "mse", {"flags": 2})
    assert [loss.name for loss in losses.values()] == ["mse", "mse"]
    assert weights == {"topics": 1.0, "flags": 2.0}


def test_a_loss_shortcut_that_needs_label_shapes_asks_for_the_name():
    with pytest.raises(ValueError, match="task 'topics'.*name the loss"):
        resolve_losses(TASKS, {"topics": "crossentropy", "flags": "mse"}, None)


def test_metrics_are_fresh_objects_per_task_named_after_it():
    auc = keras.metrics.AUC(name="auc")
    losses, _ = resolve_losses(TASKS, {"topics": SPARSE, "flags": "binary_crossentropy"}, None)
    outputs = {"topics": spec(None, 3), "flags": spec(None, 1)}
    metrics = resolve_metrics(TASKS, ["accuracy", auc], losses, outputs)
    topics, flags = metrics["topics"], metrics["flags"]
    assert [m.name for m in topics] == ["topics_accuracy", "topics_auc"]
    assert [m.name for m in flags] == ["flags_accuracy", "flags_auc"]
    assert isinstance(topics[0], keras.metrics.SparseCategoricalAccuracy)
    assert isinstance(flags[0], keras.metrics.BinaryAccuracy)
    assert topics[1] is not auc and flags[1] is not topics[1] and auc.name == "auc"
    losses, _ = resolve_losses(["t"], "categorical_crossentropy", None)
    one_hot = resolve_metrics(["t"], ["acc"], losses, {"t": spec(None, 3)})
    assert isinstance(one_hot["t"][0], keras.metrics.CategoricalAccuracy)
