"""`kt.layer_groups`: the rules that split a model into layer groups.

`FreezeSchedule`, `freeze`/`unfreeze` and `DiscriminativeLR` all consume the
`LayerGroupPlan` returned here, the way optax's `multi_transform` consumes a
label function. A model's plan is resolved once and shared: asking again for
the same model and grouping returns the same plan, until the model's
variables change.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence

import keras

from keras_transfer._keras_internals.layers import flatten_layers
from keras_transfer.groups.block_patterns import block_of
from keras_transfer.groups.hooks import HeadLayers, VariableGroups
from keras_transfer.groups.layer_group import LayerGroup, LayerGroupPlan
from keras_transfer.groups.layer_variables import fixed_layers, trainable_capable

# model -> {grouping key: (variables fingerprint, weak reference to the plan)}.
# The plan is held weakly so the cache never keeps a model alive through it.
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def layer_groups(
    model: keras.Model | LayerGroupPlan,
    groups: Sequence[str] | Sequence[LayerGroup] | LayerGroupPlan | None = None,
) -> LayerGroupPlan:
    """Splits a model into layer groups, ordered from input to output.

    Automatic grouping recognises KerasHub backbones (embeddings, one group per
    transformer layer or CNN stage, then the pooler), `keras.applications` and
    KerasCV backbones (one group per stage or block, with the stem and top as
    groups of their own) and any Functional or Sequential model (one group per
    top-level layer that has weights). Nested models, such as a backbone inside
    a classifier, are expanded in place, so the classifier's head comes last.
    A layer can split its own variables into groups (`variable_groups()`) and a
    model can keep layers out of every group (`fixed_layers()`): see
    `keras_transfer.groups.hooks`.

    The result is resolved once per model and grouping and shared: every rule
    given the same model (or the returned plan itself) uses the same groups.

    Args:
        model: a built Keras model, or a plan (returned as it is).
        groups: optional explicit grouping: a list of layer-name regular
            expressions, one per group and ordered from input to output (each
            layer joins the first group whose pattern it matches with
            `re.search`), a list of `LayerGroup`s, or a `LayerGroupPlan`.

    Returns:
        A `LayerGroupPlan`: a sequence of `LayerGroup`s whose last group is the
        model's output head.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, name="body"),
    ...     keras.layers.Dense(2, name="head"),
    ... ])
    >>> [group.name for group in kt.layer_groups(model)]
    ['body', 'head']
    >>> [group.name for group in kt.layer_groups(model, groups=["bo", "he"])]
    ['bo', 'he']
    """
    if isinstance(model, LayerGroupPlan):
        if groups is not None and groups is not model:
            raise ValueError(
                "Give the groups once: a `LayerGroupPlan` in place of the model "
                f"already holds them, but `groups={groups!r}` was given too."
            )
        return model
    _check_model(model)
    if isinstance(groups, LayerGroupPlan):
        return groups
    if groups is not None:
        if not len(groups):
            raise ValueError(
                "`groups` is an empty list, so there would be no layer groups. Give "
                "one layer-name regex per group, or `groups=None` for automatic groups."
            )
        if all(isinstance(group, LayerGroup) for group in groups):
            return LayerGroupPlan(groups, model)
        if not all(isinstance(group, str) for group in groups):
            raise TypeError(
                "`groups` must be a list of layer-name regular expressions, a list "
                f"of `kt.LayerGroup`s or a `kt.LayerGroupPlan`; got {list(groups)!r}."
            )
    return _cached_plan(model, tuple(groups) if groups is not None else None)


def _check_model(model) -> None:
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a Keras model or layer, got {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built, so it has no weights to group. "
            "Build it first, e.g. by calling it on a batch of data or by "
            "giving it an `keras.Input`."
        )


def _cached_plan(model, patterns) -> LayerGroupPlan:
    fingerprint = tuple(id(v) for v in model.weights)
    cached = _PLANS.setdefault(model, {}).get(patterns)
    if cached is not None and cached[0] == fingerprint and cached[1]() is not None:
        return cached[1]()
    if patterns is None:
        plan = LayerGroupPlan(_automatic_groups(model), model, automatic=True)
    else:
        plan = LayerGroupPlan(_groups_from_patterns(model, patterns), model, patterns)
    _PLANS[model][patterns] = (fingerprint, weakref.ref(plan))
    return plan


def _automatic_groups(model) -> list[LayerGroup]:
    head_extras = _declared_head_layers(model)
    extra_ids = {id(layer) for layer in head_extras}
    atoms = [
        (owner, layer) for owner, layer in _weighted_atoms(model) if id(layer) not in extra_ids
    ]
    groups: list[LayerGroup] = []
    for owner, layers in _split_by_owner(atoms):
        for group in _group_one_model(owner, layers):
            groups.extend(_split_by_variable_groups(group))
    if not groups:
        raise ValueError(
            f"Model '{model.name}' has no layers with trainable weights, so "
            "there is nothing to group, freeze or fine-tune."
        )
    if head_extras:
        head = groups[-1]
        groups[-1] = LayerGroup(head.name, head.layers + head_extras)
    return groups


def _declared_head_layers(model) -> list:
    """Layers a model (or a model inside it) puts in its head group through
    the `HeadLayers` hook, if they hold trainable weights."""
    declared = []
    for layer in flatten_layers(model, include_self=True):
        if isinstance(layer, HeadLayers):
            declared.extend(extra for extra in layer.head_layers() if trainable_capable(extra))
    return declared


def _split_by_variable_groups(group: LayerGroup) -> list[LayerGroup]:
    """Splits a group made of one layer that names groups of its own variables
    (the `VariableGroups` hook: `kt.HubLayer` names a SavedModel's blocks)."""
    if len(group.layers) != 1 or not isinstance(group.layers[0], VariableGroups):
        return [group]
    layer = group.layers[0]
    named = layer.variable_groups()
    if len(named) < 2:
        return [group]
    return [LayerGroup(name, [layer], list(variables)) for name, variables in named]


def _weighted_atoms(model) -> list[tuple[keras.layers.Layer, keras.layers.Layer]]:
    """(owner model, layer) pairs: the layers with trainable weights, nested
    models expanded in place, in topological order."""
    atoms = []
    fixed = {id(layer) for layer in fixed_layers(model)}
    for layer in _child_layers(model):
        if id(layer) in fixed or not trainable_capable(layer):
            continue
        if isinstance(layer, keras.Model) and _child_layers(layer):
            atoms.extend(_weighted_atoms(layer))
        else:
            atoms.append((model, layer))
    return atoms


def _child_layers(layer) -> list:
    return list(layer.layers) if isinstance(layer, keras.Model) else []


def _split_by_owner(atoms):
    runs = []
    for owner, layer in atoms:
        if runs and runs[-1][0] is owner:
            runs[-1][1].append(layer)
        else:
            runs.append((owner, [layer]))
    return runs


def _group_one_model(owner, layers) -> list[LayerGroup]:
    blocks = [block_of(layer.name) for layer in layers]
    if not any(blocks):
        groups = []
        for layer in layers:
            if groups and isinstance(layer, keras.layers.BatchNormalization):
                # A normalisation belongs with the layer it normalises.
                groups[-1].layers.append(layer)
                groups[-1].variables.extend(layer.weights)
            else:
                groups.append(LayerGroup(layer.name, [layer]))
        return groups
    # A model with named blocks: consecutive layers of one block form a group,
    # and so does each run of layers outside any block (stem, top, pooler).
    runs = []
    for layer, block in zip(layers, blocks):
        key = block or "_unblocked"
        if runs and runs[-1][0] == key:
            runs[-1][1].append(layer)
        else:
            runs.append((key, [layer]))
    return [
        LayerGroup(key if key != "_unblocked" else members[0].name, members)
        for key, members in runs
    ]


def _groups_from_patterns(model, patterns) -> list[LayerGroup]:
    layers = [layer for _, layer in _weighted_atoms(model)]
    members = split_by_patterns(
        [(layer.name, layer) for layer in layers], patterns, f"layers of model '{model.name}'"
    )
    return [LayerGroup(pattern, group) for pattern, group in zip(patterns, members)]


def split_by_patterns(named_items, patterns, what: str) -> list[list]:
    """Puts each `(name, item)` into the group of the first pattern its name
    matches (`re.search`); every pattern must match and every item must land.

    Shared by `layer_groups` (layer names) and `kt.HubLayer` (variable names).

    Args:
        named_items: `(name, item)` pairs, in order.
        patterns: regular expressions, one per group.
        what: how error messages name the items, e.g. "layers of model 'm'".

    Returns:
        One list of items per pattern.
    """
    compiled = [_compile(pattern) for pattern in patterns]
    members: list[list] = [[] for _ in patterns]
    unmatched = []
    for name, item in named_items:
        index = next((i for i, p in enumerate(compiled) if p.search(name)), None)
        if index is None:
            unmatched.append(name)
        else:
            members[index].append(item)
    names = [name for name, _ in named_items]
    for pattern, group in zip(patterns, members):
        if not group:
            raise ValueError(f"The group pattern {pattern!r} matches none of the {what}: {names}.")
    if unmatched:
        raise ValueError(
            f"{unmatched} match none of the group patterns {list(patterns)}. Every one of "
            f"the {what} must belong to a group: add a pattern for them, or end the list "
            "with a catch-all such as '.*'."
        )
    return members


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"Invalid group pattern {pattern!r}: {error}.") from None


def groups_config(groups):
    """`groups` as a config stores it: `None`, or layer-name regexes (a plan
    resolved from regexes, or automatically, is stored as what it came from)."""
    if isinstance(groups, LayerGroupPlan):
        if groups.patterns is not None:
            return list(groups.patterns)
        if groups.automatic:
            return None
    if groups is None or all(isinstance(group, str) for group in groups):
        return list(groups) if groups is not None else None
    raise ValueError(
        "Only layer-name regex groups can be serialized; rebuild `LayerGroup` "
        "objects after loading, or pass regexes as `groups`."
    )
