"""Functional graphs: running a model's graph node by node, and the Keras masks on its tensors."""

from __future__ import annotations

import keras
from keras.src.backend import get_keras_mask
from keras.src.models.functional import Functional


def is_plain_functional(layer) -> bool:
    """True for a Functional model (a subclass too) whose `call` is Keras' own.

    Such a model computes exactly its graph, so its nodes can be run one by
    one elsewhere (`run_functional_graph`). Relies on
    `keras.src.models.functional.Functional`, the class `keras.Model(inputs,
    outputs)` returns and KerasHub's backbones inherit.
    """
    return isinstance(layer, Functional) and type(layer).call is Functional.call


def run_functional_graph(model: keras.Model, inputs: list, call) -> object:
    """Runs a Functional model's graph on `inputs`, node by node.

    Each node is computed as `call(operation, args, kwargs)`, with the node's
    recorded arguments filled in with the values computed so far (what the
    model's own `call` does, minus its `training` override), so `call` may run
    the operation itself or replace it (inline a nested model, say). `inputs`
    follow `model.inputs`; the outputs come back in the model's output
    structure (`model.output`). Relies on `Functional._nodes_by_depth` (nodes
    keyed by depth, the deepest computed first) and on `Node`'s
    `operation`, `is_input`, `input_tensors`, `outputs` and
    `arguments.fill_in(values_by_tensor_id)`: the pieces
    `Function._run_through_graph` runs on.
    """
    computed = {id(tensor): value for tensor, value in zip(model.inputs, inputs)}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if not node.operation or node.is_input:
                continue
            if any(id(tensor) not in computed for tensor in node.input_tensors):
                continue  # A branch that does not start from these inputs.
            args, kwargs = node.arguments.fill_in(computed)
            outputs = call(node.operation, args, kwargs)
            for tensor, value in zip(node.outputs, keras.tree.flatten(outputs)):
                computed[id(tensor)] = value
    return keras.tree.pack_sequence_as(
        model.output, [computed[id(tensor)] for tensor in model.outputs]
    )


def keras_mask(tensor):
    """The Keras mask a (symbolic) tensor carries, or `None`.

    Layers such as `Embedding(mask_zero=True)` attach a mask that the next
    layers receive implicitly. Relies on `keras.src.backend.get_keras_mask`.
    """
    return get_keras_mask(tensor)
