"""Cutting a model between its frozen prefix and its trainable top.

The model's graph is traced again from fresh inputs with every nested plain
Functional or Sequential model inlined (a KerasHub backbone inside an encoder
inside a classifier becomes one flat graph of the same layers), so that the
cut may fall at any layer-group boundary, inside a nested model too. The
prefix is every call of a layer whose groups are all frozen, with everything
those calls depend on; the top is the rest. The tensors that cross from the
prefix to the top (a transformer layer's output and the padding mask, say)
become the prefix model's outputs and the top model's inputs. Both models
share the original layers, so training the top trains the model.
"""

from __future__ import annotations

import dataclasses

import keras

from keras_transfer._keras_internals.graphs import (
    is_plain_functional,
    keras_mask,
    run_functional_graph,
)
from keras_transfer._keras_internals.layers import flatten_layers
from keras_transfer.features.pipeline import AUGMENTATION_NAMES

# A plain model's training is its graph and Keras' own steps; a model that
# overrides one of these trains some other way, which the top would not.
_TRAINING_METHODS = ("train_step", "test_step", "compute_loss", "compute_metrics")
# Random layers that only act in training mode: off in the (inference-mode)
# prefix, as in any frozen layer. Other random layers (augmentation, noise)
# would be frozen into the cache, so they rule the cache out.
_INFERENCE_IDENTITY = (
    keras.layers.Dropout,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)


class CutUnsupported(ValueError):
    """The model cannot be cut at its frozen prefix; the message says why."""


@dataclasses.dataclass
class GraphCut:
    """A model cut in two: `top(prefix(inputs))` computes the model.

    Args:
        prefix: the model's inputs (same structure) to the list of tensors
            crossing the cut, in inference mode when cached.
        top: those tensors (one, or a list) to the model's outputs.
        frozen_layers: names of the frozen layers the prefix runs, in order.
    """

    prefix: keras.Model
    top: keras.Model
    frozen_layers: list


@dataclasses.dataclass(eq=False)
class _Call:
    operation: object
    inputs: list
    outputs: list

    @property
    def layers(self) -> list:
        if not isinstance(self.operation, keras.layers.Layer):
            return []
        return flatten_layers(self.operation, include_self=True)


def cut_frozen_prefix(model: keras.Model, plan) -> GraphCut | None:
    """Cuts `model` after its frozen layer groups, or `None` if none is frozen.

    A group is frozen when none of its variables is trainable now.

    Raises:
        CutUnsupported: the model is not a plain Functional or Sequential
            model, a trainable layer feeds a frozen one, random layers sit in
            the prefix, a Keras mask or a model output crosses the cut.
    """
    check_plain_model(model)
    inputs, outputs, calls = _trace(model)
    trainable = {id(v) for v in model.trainable_weights}
    frozen_groups = {
        index
        for index, group in enumerate(plan)
        if not any(id(v) in trainable for v in group.variables)
    }
    frozen = [call for call in calls if _is_frozen(call, plan, frozen_groups)]
    if not frozen:
        return None
    producers = {id(tensor): call for call in calls for tensor in call.outputs}
    prefix = _with_ancestors(frozen, producers)
    _check_prefix(prefix, trainable)
    crossing = _crossing_tensors(calls, prefix, producers, outputs)
    prefix_model = keras.Model(inputs, list(crossing), name=f"{model.name}_prefix")
    top_inputs = crossing[0] if len(crossing) == 1 else list(crossing)
    top = keras.Model(top_inputs, outputs, name=f"{model.name}_top")
    if len(model.outputs) > 1 and list(top.output_names) != list(model.output_names):
        raise CutUnsupported(
            f"the cut model names its outputs {top.output_names}, not "
            f"{model.output_names} as '{model.name}' does"
        )
    names = list(dict.fromkeys(call.operation.name for call in frozen))
    return GraphCut(prefix_model, top, names)


def check_plain_model(model) -> None:
    """Raises `CutUnsupported` unless `model` is a plain Functional or
    Sequential model, trained by Keras' own steps."""
    plain = is_plain_functional(model) or (
        isinstance(model, keras.Sequential) and type(model).call is keras.Sequential.call
    )
    if not plain:
        raise CutUnsupported(
            f"'{model.name}' ({type(model).__name__}) is not a plain Functional or "
            "Sequential model, so its graph cannot be cut"
        )
    overridden = [
        name
        for name in _TRAINING_METHODS
        if getattr(type(model), name) is not getattr(keras.Model, name)
    ]
    if overridden:
        raise CutUnsupported(
            f"'{model.name}' ({type(model).__name__}) overrides {overridden}, which a "
            "cut-off top model would not run"
        )


def _trace(model):
    """(fresh inputs, outputs, calls): the model's graph with every nested
    plain model inlined, as one list of layer (or op) calls in order."""
    calls: list[_Call] = []
    try:
        structure = model.inputs[0] if isinstance(model, keras.Sequential) else model.input
    except (AttributeError, ValueError, IndexError) as error:
        raise CutUnsupported(f"model '{model.name}' has no known inputs ({error})") from None
    originals = keras.tree.flatten(structure)
    fresh = [
        keras.Input(shape=t.shape[1:], batch_size=t.shape[0], dtype=t.dtype, name=_name(t))
        for t in originals
    ]

    def call(operation, args, kwargs):
        inlined = _inline(operation, args, kwargs, call)
        if inlined is not None:
            return inlined
        outputs = operation(*args, **kwargs)
        tensors = [
            t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)
        ]
        calls.append(_Call(operation, tensors, keras.tree.flatten(outputs)))
        return outputs

    outputs = _run(model, fresh, call)
    return keras.tree.pack_sequence_as(structure, fresh), outputs, calls


def _run(model, inputs: list, call):
    if isinstance(model, keras.Sequential):
        (value,) = inputs
        for layer in model.layers:
            value = call(layer, (value,), {})
        return value
    return run_functional_graph(model, inputs, call)


def _inline(operation, args, kwargs, call):
    """Runs a nested plain model's own graph through `call`, or `None` where
    the model must stay one call (a subclassed model, masks passed in)."""
    nested = is_plain_functional(operation) or (
        isinstance(operation, keras.Sequential) and type(operation).call is keras.Sequential.call
    )
    if not nested or any(mask is not None for mask in keras.tree.flatten(kwargs.get("mask"))):
        return None
    flat = keras.tree.flatten(args[0] if len(args) == 1 else args)
    if len(flat) != len(operation.inputs):
        return None
    return _run(operation, flat, call)


def _name(tensor) -> str | None:
    return getattr(tensor, "name", None)


def _is_frozen(call: _Call, plan, frozen_groups: set) -> bool:
    if not isinstance(call.operation, keras.layers.Layer):
        return False
    groups = {plan.group_index(v) for v in call.operation.weights} - {None}
    return bool(groups) and groups <= frozen_groups


def _with_ancestors(calls: list, producers: dict) -> list:
    seen: dict = {}
    pending = list(calls)
    while pending:
        call = pending.pop()
        if id(call) in seen:
            continue
        seen[id(call)] = call
        pending.extend(producers[id(t)] for t in call.inputs if id(t) in producers)
    return list(seen.values())


def _check_prefix(prefix: list, trainable: set) -> None:
    training = [
        call.operation.name
        for call in prefix
        if any(id(v) in trainable for v in getattr(call.operation, "weights", []))
    ]
    if training:
        raise CutUnsupported(
            f"the trainable layer(s) {sorted(set(training))} feed frozen layers, so the "
            "frozen part cannot run ahead of them"
        )
    random = sorted({layer.name for call in prefix for layer in _random_layers(call.layers)})
    if random:
        raise CutUnsupported(
            f"random layers {random} act in the frozen prefix: a cache would keep "
            "one draw of them (or none)"
        )


def _random_layers(layers) -> list:
    return [
        layer
        for layer in layers
        if not isinstance(layer, _INFERENCE_IDENTITY)
        and (
            type(layer).__name__.startswith(AUGMENTATION_NAMES)
            or any(isinstance(value, keras.random.SeedGenerator) for value in vars(layer).values())
        )
    ]


def _crossing_tensors(calls, prefix, producers, outputs) -> list:
    """The tensors the top reads from the prefix or the inputs, in order."""
    in_prefix = {id(call) for call in prefix}
    ends = [producers[id(t)] for t in keras.tree.flatten(outputs) if id(t) in producers]
    needed = _with_ancestors(ends, producers)
    needed_ids = {id(call) for call in needed}
    crossing: dict = {}
    for call in calls:
        if id(call) in in_prefix or id(call) not in needed_ids:
            continue
        for tensor in call.inputs:
            producer = producers.get(id(tensor))
            if producer is None or id(producer) in in_prefix:
                crossing.setdefault(id(tensor), tensor)
    for tensor in keras.tree.flatten(outputs):
        producer = producers.get(id(tensor))
        if producer is None or id(producer) in in_prefix:
            raise CutUnsupported(
                f"the model output '{tensor.name}' comes from the frozen part alone"
            )
    masked = [t.name for t in crossing.values() if keras_mask(t) is not None]
    if masked:
        raise CutUnsupported(f"Keras masks ride on {masked}, which a cached array would drop")
    return list(crossing.values())
