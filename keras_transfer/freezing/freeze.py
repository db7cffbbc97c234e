"""Freezing and unfreezing layer groups by hand: `kt.freeze`, `kt.unfreeze`."""

from __future__ import annotations

import keras

from keras_transfer._keras_internals.layers import flatten_layers
from keras_transfer._keras_internals.training import sync_jax_state
from keras_transfer.freezing.trainable_set import (
    follow_trainable,
    optimizer_chain,
    track_variables,
)
from keras_transfer.groups import LayerGroup, LayerGroupPlan, layer_groups
from keras_transfer.groups.layer_group import check_same_groups
from keras_transfer.groups.layer_variables import (
    fixed_layers,
    frozen_by_lora,
    holds_lora,
    trainable_capable_weights,
)

ALL = "all"


def freeze(
    model: keras.Model | LayerGroupPlan,
    trainable_groups: int | str = 1,
    groups=None,
    freeze_batchnorm: bool = True,
) -> LayerGroupPlan:
    """Freezes a model except for its top `trainable_groups` layer groups.

    Works before `compile`, between two `fit` calls and (through
    `FreezeSchedule`) inside one: a compiled model's optimizer keeps the state
    of variables that were already training and its train function is rebuilt,
    so no recompile is needed.

    Args:
        model: a built Keras model, or its `kt.layer_groups` plan.
        trainable_groups: how many groups, counted from the output, are
            trainable; `"all"` unfreezes everything.
        groups: optional explicit grouping, as for `kt.layer_groups`.
        freeze_batchnorm: keep `BatchNormalization` layers frozen (in inference
            mode, moving statistics fixed) even in trainable groups, as the
            Keras transfer-learning guide advises. Defaults to `True`.

    Returns:
        The layer groups used.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, name="body"),
    ...     keras.layers.Dense(2, name="head"),
    ... ])
    >>> _ = kt.freeze(model, trainable_groups=1)
    >>> [layer.trainable for layer in model.layers]
    [False, True]
    """
    resolved = layer_groups(model, groups)
    if isinstance(model, LayerGroupPlan):
        model = model.owning_model()
    check_optimizer_agrees(model, resolved, "kt.freeze")
    count = resolve_group_count(trainable_groups, len(resolved))
    set_trainable_groups(model, resolved, count, freeze_batchnorm)
    return resolved


def unfreeze(
    model: keras.Model | LayerGroupPlan, groups=None, freeze_batchnorm: bool = True
) -> LayerGroupPlan:
    """Makes every layer group trainable; see `kt.freeze` for the arguments.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> model.trainable = False
    >>> _ = kt.unfreeze(model)
    >>> len(model.trainable_weights)
    2
    """
    return freeze(model, ALL, groups=groups, freeze_batchnorm=freeze_batchnorm)


def resolve_group_count(trainable_groups: int | str, num_groups: int) -> int:
    """Turns `"all"` or a group count into a count, checking its range."""
    if trainable_groups == ALL:
        return num_groups
    if isinstance(trainable_groups, bool) or not isinstance(trainable_groups, int):
        raise TypeError(
            "The number of trainable groups must be a positive integer or "
            f"'all', got {trainable_groups!r}."
        )
    if not 1 <= trainable_groups <= num_groups:
        raise ValueError(
            f"Cannot make {trainable_groups} group(s) trainable: the model has "
            f"{num_groups} layer group(s). Use a number from 1 to {num_groups}, "
            "or 'all'; `kt.describe_groups(model)` shows the groups."
        )
    return trainable_groups


def set_trainable_groups(model, groups, count: int, freeze_batchnorm: bool) -> None:
    """Makes the top `count` groups trainable and keeps a compiled model's
    optimizer and train function in step."""
    first_trainable = len(groups) - count
    flags = [index >= first_trainable for index in range(len(groups))]
    set_group_trainability(model, groups, flags, freeze_batchnorm)


def set_group_trainability(model, groups, trainable, freeze_batchnorm: bool) -> None:
    """Makes each group trainable or frozen, one flag per group, and keeps a
    compiled model's optimizer and train function in step.

    A trainable group that holds LoRA trains only its LoRA factors (see
    `keras_transfer.groups.layer_variables.frozen_by_lora`).
    """
    # The trainable/non-trainable split is about to change: a JAX fit's
    # pending values must be in the variables first.
    sync_jax_state(model)
    model.trainable = True
    for layer in fixed_layers(model):
        layer.trainable = False
    for group, flag in zip(groups, trainable):
        _set_group_trainable(group, flag, freeze_batchnorm)
    if not model.trainable_weights:
        raise ValueError(
            f"After freezing, model '{model.name}' has no trainable weights "
            "(the trainable groups hold only frozen BatchNormalization layers). "
            "Make more groups trainable or pass `freeze_batchnorm=False`."
        )
    _sync_compiled_model(model, groups)


def _set_group_trainable(group: LayerGroup, trainable: bool, freeze_batchnorm: bool) -> None:
    if not group.owns_whole_layers:
        for variable in group.trainable_capable_variables:
            variable.trainable = trainable
        return
    for layer in group.layers:
        layer.trainable = trainable
        if trainable and freeze_batchnorm:
            for sublayer in flatten_layers(layer, include_self=True):
                if isinstance(sublayer, keras.layers.BatchNormalization):
                    sublayer.trainable = False
    if trainable:
        _train_lora_factors_only(group.layers)


def _train_lora_factors_only(layers) -> None:
    """In a group holding LoRA, freezes all but the factors: whole sublayers
    without LoRA (so a BatchNormalization runs in inference mode), and the
    base kernels and biases of the layers with it."""
    held = frozen_by_lora(layers)
    if not held:
        return
    for layer in layers:
        for sublayer in flatten_layers(layer, include_self=True):
            if not holds_lora(sublayer):
                sublayer.trainable = False
    for variable in held:
        variable.trainable = False


def trainable_capable_under(model, groups) -> list:
    """The variables of `model` that may ever train with these groups: its
    trainable-capable weights less those LoRA keeps frozen."""
    held = {id(v) for group in groups for v in frozen_by_lora(group.layers)}
    return [v for v in trainable_capable_weights(model) if id(v) not in held]


def _sync_compiled_model(model, groups) -> None:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return
    track_variables(optimizer, trainable_capable_under(model, groups))
    follow_trainable(optimizer, model.trainable_variables)
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


def check_optimizer_agrees(model, plan: LayerGroupPlan, user: str) -> None:
    """Raises if the model's built optimizer scales other groups than `plan`.

    An optimizer (or one it wraps) that assigns rates per layer group says
    which plan it used through a `group_plan` attribute (`DiscriminativeLR`
    does once built); a freeze stage on other groups would silently pair the
    wrong rates with the wrong layers.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not optimizer.built:
        return
    for member in optimizer_chain(optimizer):
        other = getattr(member, "group_plan", None)
        if other is not None:
            check_same_groups(plan, user, other, type(member).__name__)
