"""`kt.enable_lora`: Keras LoRA in chosen layer groups of any model."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import keras

from keras_transfer._checks import check_integer, check_number
from keras_transfer._keras_internals.layers import flatten_layers, own_weights
from keras_transfer.groups import LayerGroupPlan, layer_groups
from keras_transfer.groups.layer_variables import count_params, fixed_layers, lora_factors
from keras_transfer.lora._lora_layers import (
    layer_path,
    lora_layers,
    owns_weights,
    refreshed_plan,
    retrace,
    train_lora,
    unique_layers,
    why_skipped,
)
from keras_transfer.lora.lora_summary import LoraSummary


def enable_lora(
    model: keras.Model | LayerGroupPlan,
    rank: int = 8,
    alpha: float | None = None,
    groups: int | str | Sequence[int | str] | None = None,
    layers: str | None = None,
) -> LoraSummary:
    """Turns on Keras LoRA in chosen layer groups and trains only it and the head.

    LoRA (Hu et al., 2021) freezes a pretrained weight `W` and learns a
    low-rank update `(alpha / rank) * A @ B` beside it, so a backbone of
    millions of parameters fine-tunes by training a few thousand. This calls
    Keras' own `enable_lora(rank, lora_alpha)` on every LoRA-capable layer
    (`Dense`, `EinsumDense`, `Embedding`, `Conv1D/2D/3D`) of the chosen groups
    of `kt.layer_groups(model)`: KerasHub backbones and tasks,
    `keras.applications` and KerasCV convnets, Functional, Sequential and
    nested models alike. Layers with weights but no Keras LoRA
    (`DepthwiseConv2D`, normalisation, position embeddings) are skipped and
    the summary says so.

    Afterwards only the LoRA factors and the head group (the last group)
    train; everything else is frozen, base kernels, biases and normalisation
    of the LoRA groups included, as in the LoRA paper and PEFT's default.
    `kt.freeze` and `kt.FreezeSchedule` keep that rule: a stage that unfreezes
    a group holding LoRA trains its factors, never its base weights, while a
    group without LoRA unfreezes in full. `kt.DiscriminativeLR` scales the
    factors with their group. Call it before `compile`, and resolve layer
    groups (`kt.layer_groups`, `FreezeSchedule`, `DiscriminativeLR`) after it,
    so that they see the factors.

    On `EinsumDense` (KerasHub attention projections) Keras factors only the
    kernel's last axis: a `(hidden, heads, head_dim)` query kernel gets
    `A` of shape `(hidden, heads, rank)` and `B` of `(rank, head_dim)`, so
    MiniLM's `query` at rank 8 trains 37,120 factor parameters where the
    paper's `(hidden, rank) @ (rank, heads * head_dim)` would train 6,144.
    The summary counts what Keras creates.

    Use `kt.save_adapters` to save what trained apart from the backbone and
    `kt.merge_lora` to fold the factors into the kernels for serving.

    Args:
        model: a built Keras model, or its `kt.layer_groups` plan (for a
            grouping of your own).
        rank: the rank of the update, a positive integer. Defaults to 8.
        alpha: the update's scale numerator; defaults to `rank` (scale 1),
            as in Keras.
        groups: which layer groups get LoRA: a group index (negative counts
            from the head), a group name or a regex matched against whole
            group names (`"transformer_layer_.*"`), or a list of them.
            Defaults to every group but the head.
        layers: optional regex searched in each candidate layer's path
            (`transformer_layer_0/self_attention_layer/query`): only matching
            layers get LoRA, e.g. `"query|value"`.

    Returns:
        A `LoraSummary`: the layers, the LoRA parameters and their share of
        all parameters; `print` it for a table.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([
    ...     keras.Input((16,)),
    ...     keras.layers.Dense(16, name="body"),
    ...     keras.layers.Dense(2, name="head"),
    ... ], name="classifier")
    >>> summary = kt.enable_lora(model, rank=4)
    >>> summary.lora_params
    128
    >>> [v.path for v in model.trainable_weights]  # doctest: +NORMALIZE_WHITESPACE
    ['classifier/body/lora_kernel_a', 'classifier/body/lora_kernel_b',
     'classifier/head/kernel', 'classifier/head/bias']
    """
    rank = check_integer(rank, "rank", "the LoRA rank", low=1)
    if alpha is not None:
        alpha = check_number(alpha, "alpha", "the LoRA scale numerator", low=0, low_open=True)
    plan = layer_groups(model)
    model = plan.owning_model() if isinstance(model, LayerGroupPlan) else model
    _refuse_enabled_lora(model)
    chosen_groups = _select_groups(plan, groups)
    pattern = _compile(layers)
    chosen, skipped = _select_layers(model, plan, chosen_groups, pattern, groups, layers)
    for layer in chosen:
        layer.enable_lora(rank, lora_alpha=alpha)
    plan = refreshed_plan(plan)
    train_lora(model, plan)
    retrace(model)
    return _summary(model, plan, chosen, skipped, rank)


def _refuse_enabled_lora(model) -> None:
    enabled = lora_layers(model)
    if enabled:
        raise ValueError(
            f"LoRA is already enabled on {len(enabled)} layer(s) of model '{model.name}' "
            f"(first: '{layer_path(enabled[0])}'). Enable it once per model: fold the "
            "present factors into the kernels with `kt.merge_lora(model)` first, or start "
            "from a model without LoRA."
        )


def _select_groups(plan, groups) -> list[int]:
    names = plan.names
    if groups is None:
        if len(plan) < 2:
            raise ValueError(
                f"The model has a single layer group ({names[0]!r}), its head, and LoRA goes "
                "into every group but the head by default. Pass `groups=[0]` to put LoRA in "
                "it, or give a grouping with more groups (`kt.layer_groups(model, [...])`)."
            )
        return list(range(len(plan) - 1))
    selectors = [groups] if isinstance(groups, (int, str)) else list(groups)
    if not selectors:
        raise ValueError("`groups` is an empty list: name at least one group, or pass None.")
    chosen: set[int] = set()
    for selector in selectors:
        chosen.update(_resolve_selector(selector, names))
    return sorted(chosen)


def _resolve_selector(selector, names) -> list[int]:
    listing = ", ".join(f"{index}: {name}" for index, name in enumerate(names))
    if isinstance(selector, bool) or not isinstance(selector, (int, str)):
        raise TypeError(
            "Each of `groups` must be a group index, a group name or a regex, got "
            f"{selector!r}. The groups are {listing}."
        )
    if isinstance(selector, int):
        if not -len(names) <= selector < len(names):
            raise ValueError(
                f"Group index {selector} is out of range: the model has {len(names)} "
                f"groups ({listing})."
            )
        return [selector % len(names)]
    pattern = _compile(selector, what="group regex")
    matches = [index for index, name in enumerate(names) if pattern.fullmatch(name)]
    if not matches:
        raise ValueError(
            f"{selector!r} names none of the layer groups ({listing}). Give an index, "
            "a name or a regex matching whole names, such as 'transformer_layer_.*'."
        )
    return matches


def _compile(pattern: str | None, what: str = "`layers` regex") -> re.Pattern | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise TypeError(f"The {what} must be a string, got {pattern!r}.")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"Invalid {what} {pattern!r}: {error}.") from None


def _select_layers(model, plan, chosen_groups, pattern, groups, layers):
    """The layers that get LoRA, and what was skipped (class -> count)."""
    fixed = {id(layer) for layer in fixed_layers(model)}
    chosen, skipped = [], Counter()
    seen = set()
    for index in chosen_groups:
        for layer in _candidates(plan[index]):
            if id(layer) in seen or id(layer) in fixed:
                continue
            seen.add(id(layer))
            if pattern is not None and not pattern.search(layer_path(layer)):
                continue
            reason = why_skipped(layer)
            if reason is None:
                chosen.append(layer)
            elif owns_weights(layer):
                skipped[reason] += 1
    if not chosen:
        raise ValueError(_nothing_selected(plan, chosen_groups, groups, layers))
    return _in_weight_order(model, chosen), dict(skipped)


def _in_weight_order(model, layers) -> list:
    """`layers` in the order of their weights in `model.weights` (sublayers
    are walked in another order), so summaries read from input to output."""
    position = {id(v): index for index, v in enumerate(model.weights)}
    return sorted(layers, key=lambda layer: min(position[id(v)] for v in own_weights(layer)))


def _candidates(group) -> list:
    return unique_layers(sublayer for layer in group.layers for sublayer in flatten_layers(layer))


def _nothing_selected(plan, chosen_groups, groups, layers) -> str:
    what = "the chosen groups" if groups is not None else "the groups below the head"
    if layers is not None:
        what += f" with a path matching layers={layers!r}"
    contents = []
    for index in chosen_groups[:8]:
        members = [
            f"{type(layer).__name__} '{layer_path(layer)}'"
            for layer in _candidates(plan[index])
            if owns_weights(layer)
        ]
        shown = ", ".join(members[:6]) + (", ..." if len(members) > 6 else "")
        contents.append(f"  {index}: {plan[index].name}: {shown or 'no weights'}")
    if len(chosen_groups) > 8:
        contents.append(f"  ... and {len(chosen_groups) - 8} more groups")
    return (
        f"No LoRA-capable layer (Dense, EinsumDense, Embedding, Conv1D/2D/3D) in {what}. "
        "They contain:\n" + "\n".join(contents) + "\nChoose other `groups`, or a `layers` "
        "regex that matches some of these paths."
    )


def _summary(model, plan, chosen, skipped, rank) -> LoraSummary:
    chosen_ids = {id(layer) for layer in chosen}
    group_names = tuple(
        group.name for group in plan if any(id(layer) in chosen_ids for layer in _candidates(group))
    )
    rows = tuple(
        (layer_path(layer), type(layer).__name__, count_params(lora_factors(layer)))
        for layer in chosen
    )
    return LoraSummary(
        rank=rank,
        alpha=chosen[0].lora_alpha,
        layers=rows,
        groups=group_names,
        head=plan[-1].name,
        lora_params=sum(row[2] for row in rows),
        trainable_params=count_params(model.trainable_weights),
        total_params=count_params(model.weights),
        skipped=skipped,
    )
