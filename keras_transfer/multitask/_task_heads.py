"""The heads of a `MultiTaskModel` as one layer, and the checks on its parts."""

from __future__ import annotations

import keras


class TaskHeads(keras.layers.Layer):
    """Every task's head as one layer: one top layer group for `kt.layer_groups`."""

    def __init__(self, heads: dict, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.feature_shape = None
        self.output_specs = {}

    def build(self, feature_shape):
        features = keras.KerasTensor(feature_shape)
        self.output_specs = {task: head(features) for task, head in self.heads.items()}
        self.feature_shape = tuple(feature_shape)

    def call(self, features, training=None):
        return {task: head(features, training=training) for task, head in self.heads.items()}


def check_backbone(backbone):
    if not isinstance(backbone, keras.layers.Layer):
        raise TypeError(
            f"`backbone` must be a Keras model or layer, got {type(backbone).__name__}."
        )


def check_heads(heads):
    if not isinstance(heads, dict) or not heads:
        raise TypeError(
            "`heads` must be a non-empty dict mapping each task name to its head (a "
            "Keras layer or model on the backbone's features), e.g. {'movies': "
            f"keras.layers.Dense(2)}}; got {type(heads).__name__}."
        )
    for task, head in heads.items():
        if not isinstance(task, str) or not task.isidentifier():
            raise ValueError(
                f"Task names must be identifiers (they name logs such as "
                f"'<task>_loss'), got {task!r}."
            )
        if not isinstance(head, keras.layers.Layer):
            raise TypeError(
                f"The head of task '{task}' must be a Keras layer or model, got "
                f"{type(head).__name__}."
            )
    if len({id(head) for head in heads.values()}) != len(heads):
        raise ValueError(
            "Two tasks share one head object; give each task its own head (a shared "
            "layer belongs in the backbone)."
        )


def check_features(features):
    if not hasattr(features, "shape") or isinstance(features, (dict, list, tuple)):
        raise ValueError(
            "The backbone must return one feature tensor, got "
            f"{type(features).__name__}. Wrap it to pick one output, e.g. a "
            "backbone's 'pooled_output'."
        )


def check_known_tasks(data, tasks):
    if not isinstance(data, dict):
        raise TypeError(f"`data` must be a dict of task name -> data, got {type(data).__name__}.")
    unknown = [task for task in data if task not in tasks]
    if unknown:
        raise ValueError(f"`data` names tasks {unknown} that the model has no head for: {tasks}.")
