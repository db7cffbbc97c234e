"""What the LoRA functions share: which layers can take Keras LoRA, which have
it, where they are, and what trains in a LoRA run."""

from __future__ import annotations

import keras

from keras_transfer._keras_internals.layers import flatten_layers, trainable_capable_variables
from keras_transfer.freezing.freeze import set_group_trainability
from keras_transfer.groups import LayerGroup, LayerGroupPlan, layer_groups
from keras_transfer.groups.layer_variables import has_lora, holds_lora


def lora_capable(layer) -> bool:
    """Whether `layer` has Keras' layer-level LoRA (`Dense`, `EinsumDense`,
    `Embedding`, `Conv1D/2D/3D` and their subclasses)."""
    return (
        callable(getattr(layer, "enable_lora", None))
        and hasattr(layer, "lora_enabled")
        and not isinstance(layer, keras.Model)
    )


def why_skipped(layer) -> str | None:
    """Why a layer with weights gets no LoRA (`None` when it can take it)."""
    if not lora_capable(layer):
        return type(layer).__name__
    if getattr(layer, "kernel_constraint", None) or getattr(layer, "embeddings_constraint", None):
        return f"{type(layer).__name__} with a constraint"
    return None


def owns_weights(layer) -> bool:
    """Whether `layer` itself (not only its sublayers) holds trainable weights."""
    return bool(trainable_capable_variables(layer))


def lora_layers(model) -> list:
    """The layers of `model` with LoRA enabled, each once, in layer order."""
    return [layer for layer in unique_layers(flatten_layers(model)) if has_lora(layer)]


def unique_layers(layers) -> list:
    seen, result = set(), []
    for layer in layers:
        if id(layer) not in seen:
            seen.add(id(layer))
            result.append(layer)
    return result


def layer_path(layer) -> str:
    """Where a layer sits in its model (`transformer_layer_0/.../query`)."""
    return layer.path or layer.name


def train_lora(model, plan: LayerGroupPlan) -> None:
    """The trainable set of a LoRA run: the factors of every group that holds
    LoRA, the whole head group, nothing else."""
    head = len(plan) - 1
    flags = [
        index == head or any(holds_lora(layer) for layer in group.layers)
        for index, group in enumerate(plan)
    ]
    set_group_trainability(model, plan, flags, freeze_batchnorm=True)


def refreshed_plan(plan: LayerGroupPlan) -> LayerGroupPlan:
    """The same grouping, resolved again so that its groups list the variables
    LoRA has just added (automatic and regex groups come from `layer_groups`
    again; groups given by hand are rebuilt from their layers)."""
    model = plan.owning_model()
    if plan.automatic:
        return layer_groups(model)
    if plan.patterns is not None:
        return layer_groups(model, list(plan.patterns))
    groups = [
        LayerGroup(group.name, group.layers) if group.owns_whole_layers else group for group in plan
    ]
    return LayerGroupPlan(groups, model)


def retrace(model) -> None:
    """Makes `model`, and every model inside it, trace its compiled train,
    test and predict functions again at their next use.

    A traced function keeps what it saw: on TensorFlow, a layer's LoRA
    branch (on or off) and the factor variables it captured. Turning LoRA on
    or off must therefore trace them again, as a change of trainable
    variables must.
    """
    for layer in unique_layers(flatten_layers(model)):
        if isinstance(layer, keras.Model):
            for kind in ("train", "test", "predict"):
                if getattr(layer, f"{kind}_function", None) is not None:
                    getattr(layer, f"make_{kind}_function")(force=True)
