"""Which variables a layer could train, and which layers never train.

Shared by layer grouping, freezing and the optimizer's view of trainable
variables, so "trainable-capable" means one thing everywhere.
"""

from __future__ import annotations

from keras_transfer._keras_internals.layers import flatten_layers, trainable_capable_variables
from keras_transfer.groups.hooks import FixedLayers


def trainable_capable(layer) -> list:
    """Variables `layer` and its sublayers would train were they trainable.

    Ignores the layers' current `trainable` flags; leaves out the variables of
    layers declared fixed (see `fixed_layers`), which never train.
    """
    sublayers = flatten_layers(layer, include_self=True)
    fixed = {id(v) for fixed_layer in _declared_fixed(sublayers) for v in fixed_layer.weights}
    return unique_variables(
        v
        for sublayer in sublayers
        for v in trainable_capable_variables(sublayer)
        if id(v) not in fixed
    )


def trainable_capable_weights(model) -> list:
    """`trainable_capable(model)`, in the order of `model.weights`."""
    capable = {id(v) for v in trainable_capable(model)}
    return [v for v in model.weights if id(v) in capable]


def fixed_layers(layer) -> list:
    """Layers inside `layer` that must never train, such as a distillation
    teacher: those named by the `fixed_layers()` hook (see
    `keras_transfer.groups.hooks.FixedLayers`) of `layer` or its sublayers."""
    return _declared_fixed(flatten_layers(layer, include_self=True))


def _declared_fixed(sublayers) -> list:
    fixed = []
    for sublayer in sublayers:
        if isinstance(sublayer, FixedLayers):
            fixed.extend(sublayer.fixed_layers())
    return fixed


def unique_variables(variables) -> list:
    """`variables` without repeats, in first-seen order."""
    seen, result = set(), []
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            result.append(variable)
    return result


def count_params(variables) -> int:
    """The number of scalars in `variables`."""
    total = 0
    for variable in variables:
        size = 1
        for dim in variable.shape:
            size *= int(dim)
        total += size
    return total
