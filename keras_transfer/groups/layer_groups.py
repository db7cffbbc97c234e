"""Layer groups: the one idea of "a layer group" shared by the whole library.

`FreezeSchedule`, `freeze`/`unfreeze` and `DiscriminativeLR` all consume the
list returned by `layer_groups`, the way optax's `multi_transform` consumes a
label function.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import keras

# Name patterns of the stages of known architectures. The first capture of
# the first pattern that matches a layer name is that layer's stage.
_STAGE_PATTERNS = (
    # KerasHub transformers: `transformer_layer_3`, `decoder_layer_0`, ...
    re.compile(r"((?:transformer|encoder|decoder)_layer_\d+)"),
    # ConvNeXt (applications) and KerasHub CNNs: `..._stage_2_block_1_...`;
    # KerasCV ResNets: `v2_stack_1_block2_...`.
    re.compile(r"(stage_?\d+)"),
    re.compile(r"(stack_?\d+)"),
    # ResNet / DenseNet (applications): `conv3_block2_1_conv` -> `conv3`.
    re.compile(r"^(conv\d+)_block"),
    # EfficientNet, VGG, Xception, MobileNetV2: `block2a_...` -> `block2`.
    re.compile(r"^(block_?\d+)"),
    # MobileNetV3: `expanded_conv_4_depthwise` -> `expanded_conv_4`.
    re.compile(r"^(expanded_conv(?:_\d+)?)_"),
    # MobileNet: `conv_dw_3`, `conv_pw_3_bn` -> `conv_block_3`.
    re.compile(r"^conv_(?:dw|pw)_(\d+)"),
)


@dataclasses.dataclass(eq=False)
class LayerGroup:
    """A named set of layers that is frozen and scaled as one unit.

    Args:
        name: the group's name, used in tables, logs and error messages.
        layers: the layers of the group, in topological order.
        variables: optional explicit variables, for a group that owns only
            part of a layer's variables (a SavedModel's encoder block inside
            one `HubLayer`). Defaults to every variable of `layers`.
    """

    name: str
    layers: list
    variables: list | None = None

    def __post_init__(self):
        self.owns_whole_layers = self.variables is None
        if self.variables is None:
            self.variables = _unique(v for layer in self.layers for v in layer.weights)

    @property
    def trainable_capable_variables(self) -> list:
        """Variables an optimizer may update when the group is unfrozen."""
        capable = {id(v) for layer in self.layers for v in _trainable_capable(layer)}
        return [v for v in self.variables if id(v) in capable]

    @property
    def num_params(self) -> int:
        return count_params(self.variables)

    @property
    def num_trainable_params(self) -> int:
        trainable = {id(v) for layer in self.layers for v in layer.trainable_weights}
        return count_params(v for v in self.variables if id(v) in trainable)

    def __repr__(self):
        names = ", ".join(layer.name for layer in self.layers[:3])
        more = ", ..." if len(self.layers) > 3 else ""
        return f"LayerGroup({self.name!r}, layers=[{names}{more}])"


def layer_groups(
    model: keras.Model,
    groups: Sequence[str] | Sequence[LayerGroup] | None = None,
) -> list[LayerGroup]:
    """Splits a model into layer groups, ordered from input to output.

    Automatic grouping recognises KerasHub backbones (embeddings, one group per
    transformer layer or CNN stage, then the pooler), `keras.applications` and
    KerasCV backbones (one group per stage or block, with the stem and top as
    groups of their own) and any Functional or Sequential model (one group per
    top-level layer that has weights). Nested models, such as a backbone inside
    a classifier, are expanded in place, so the classifier's head comes last.

    Args:
        model: a built Keras model.
        groups: optional explicit grouping: a list of layer-name regular
            expressions, one per group and ordered from input to output (each
            layer joins the first group whose pattern it matches with
            `re.search`), or a list of `LayerGroup`s, returned as they are.

    Returns:
        A list of `LayerGroup`s; the last group is the model's output head.

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
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a Keras model or layer, got {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built, so it has no weights to group. "
            "Build it first, e.g. by calling it on a batch of data or by "
            "giving it an `keras.Input`."
        )
    if groups is not None:
        if not len(groups):
            raise ValueError(
                "`groups` is an empty list, so there would be no layer groups. Give "
                "one layer-name regex per group, or `groups=None` for automatic groups."
            )
        if all(isinstance(group, LayerGroup) for group in groups):
            return list(groups)
        return _groups_from_patterns(model, groups)
    found = _automatic_groups(model)
    if not found:
        raise ValueError(
            f"Model '{model.name}' has no layers with trainable weights, so "
            "there is nothing to group, freeze or fine-tune."
        )
    return found


def describe_groups(model: keras.Model, groups=None, print_fn=print) -> str:
    """Prints a table of a model's layer groups and returns it.

    Args:
        model: a built Keras model.
        groups: optional explicit grouping, as for `layer_groups`.
        print_fn: where the table goes; `None` prints nothing.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> table = kt.describe_groups(model, print_fn=None)
    >>> "trainable" in table
    True
    """
    rows = [("#", "group", "layers", "params", "trainable")]
    for index, group in enumerate(layer_groups(model, groups)):
        layers = ", ".join(layer.name for layer in group.layers)
        if len(layers) > 48:
            layers = layers[:45] + "..."
        rows.append(
            (
                str(index),
                group.name,
                layers,
                f"{group.num_params:,}",
                f"{group.num_trainable_params:,}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    table = "\n".join(lines)
    if print_fn is not None:
        print_fn(table)
    return table


def _automatic_groups(model) -> list[LayerGroup]:
    atoms = _weighted_atoms(model)
    groups: list[LayerGroup] = []
    for owner, layers in _split_by_owner(atoms):
        for group in _group_one_model(owner, layers):
            groups.extend(_split_by_variable_groups(group))
    return groups


def _split_by_variable_groups(group: LayerGroup) -> list[LayerGroup]:
    """Splits a group made of one layer that names groups of its own variables.

    A layer opts in with a `variable_groups()` method returning `(name,
    variables)` pairs ordered input to output: `kt.HubLayer` does, so a
    SavedModel's encoder blocks can be unfrozen one by one.
    """
    if len(group.layers) != 1 or not hasattr(group.layers[0], "variable_groups"):
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
        if id(layer) in fixed or not _trainable_capable(layer):
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
    stages = [_stage_of(layer.name) for layer in layers]
    if not any(stages):
        groups = []
        for layer in layers:
            if groups and isinstance(layer, keras.layers.BatchNormalization):
                # A normalisation belongs with the layer it normalises.
                groups[-1].layers.append(layer)
                groups[-1].variables.extend(layer.weights)
            else:
                groups.append(LayerGroup(layer.name, [layer]))
        return groups
    # A model with named stages: consecutive layers of one stage form a group,
    # and so does each run of unstaged layers (the stem, the top, the pooler).
    groups = []
    for layer, stage in zip(layers, stages):
        key = stage or "_unstaged"
        if groups and groups[-1][0] == key:
            groups[-1][1].append(layer)
        else:
            groups.append((key, [layer]))
    return [
        LayerGroup(key if key != "_unstaged" else members[0].name, members)
        for key, members in groups
    ]


def _stage_of(layer_name: str) -> str | None:
    for pattern in _STAGE_PATTERNS:
        match = pattern.search(layer_name)
        if match:
            stage = match.group(1)
            return stage if not stage.isdigit() else f"conv_block_{stage}"
    return None


def _groups_from_patterns(model, patterns) -> list[LayerGroup]:
    if not all(isinstance(pattern, str) for pattern in patterns):
        raise TypeError(
            "`groups` must be a list of layer-name regular expressions or a "
            f"list of `kt.LayerGroup`s; got {list(patterns)!r}."
        )
    layers = [layer for _, layer in _weighted_atoms(model)]
    members = split_by_patterns(
        [(layer.name, layer) for layer in layers], patterns, f"layers of model '{model.name}'"
    )
    return [LayerGroup(pattern, group) for pattern, group in zip(patterns, members)]


def split_by_patterns(named_items, patterns, what: str) -> list[list]:
    """Puts each `(name, item)` into the group of the first pattern its name
    matches (`re.search`); every pattern must match and every item must land.

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


def _trainable_capable(layer) -> list:
    """Variables the layer would train if it were trainable, whatever its
    current `trainable` flag: Keras keeps them in `_trainable_variables`.
    Variables of fixed layers (see `fixed_layers`) never train."""
    sublayers = list(layer._flatten_layers(include_self=True))
    fixed = {id(v) for fixed_layer in _declared_fixed(sublayers) for v in fixed_layer.weights}
    return _unique(
        v for sublayer in sublayers for v in sublayer._trainable_variables if id(v) not in fixed
    )


def fixed_layers(layer) -> list:
    """Layers inside `layer` that must never train, such as a distillation
    teacher. A model declares them with a `fixed_layers()` method; layer
    groups leave them out and `kt.freeze` / `kt.FreezeSchedule` keep them
    frozen whatever the stage."""
    return _declared_fixed(layer._flatten_layers(include_self=True))


def _declared_fixed(sublayers) -> list:
    fixed = []
    for sublayer in sublayers:
        declared = getattr(sublayer, "fixed_layers", None)
        if callable(declared):
            fixed.extend(declared())
    return fixed


def _unique(variables) -> list:
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
