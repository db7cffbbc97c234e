"""Which variables a layer could train, and which layers never train.

Shared by layer grouping, freezing and the optimizer's view of trainable
variables, so "trainable-capable" means one thing everywhere. It also says
which variables LoRA keeps frozen (`frozen_by_lora`), the one rule that
`kt.freeze`, `kt.FreezeSchedule` and `kt.enable_lora` follow for a group with
LoRA in it.
"""

from __future__ import annotations

import keras

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


# The attributes under which Keras' `enable_lora` keeps a layer's factors
# (`Dense`, `EinsumDense`, the convolutions; `Embedding`).
LORA_FACTOR_ATTRIBUTES = (
    "lora_kernel_a",
    "lora_kernel_b",
    "lora_embeddings_a",
    "lora_embeddings_b",
)


def has_lora(layer) -> bool:
    """Whether Keras LoRA is enabled on `layer` itself (`layer.enable_lora`)."""
    # A KerasHub `Backbone` has an `enable_lora` of its own; only layers count.
    return bool(getattr(layer, "lora_enabled", False)) and not isinstance(layer, keras.Model)


def lora_factors(layer) -> list:
    """The LoRA factors of `layer` and its sublayers, in layer order."""
    return unique_variables(
        getattr(sublayer, name)
        for sublayer in flatten_layers(layer, include_self=True)
        if has_lora(sublayer)
        for name in LORA_FACTOR_ATTRIBUTES
        if getattr(sublayer, name, None) is not None
    )


def holds_lora(layer) -> bool:
    """Whether `layer` or one of its sublayers has LoRA enabled."""
    return any(has_lora(sublayer) for sublayer in flatten_layers(layer, include_self=True))


def frozen_by_lora(layers) -> list:
    """The variables that stay frozen in a layer group holding LoRA.

    In a group where some layer has LoRA enabled, only the LoRA factors train:
    base kernels, biases, normalisation and the layers left without LoRA stay
    frozen, as in the LoRA paper and PEFT's default (`bias="none"`). A group
    without LoRA trains all its variables, so this is empty for it.

    Args:
        layers: the layers of one group.
    """
    layers = list(layers)
    if not any(holds_lora(layer) for layer in layers):
        return []
    factors = {id(v) for layer in layers for v in lora_factors(layer)}
    return unique_variables(
        v for layer in layers for v in trainable_capable(layer) if id(v) not in factors
    )


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
