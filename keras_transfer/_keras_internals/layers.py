"""Layers: walking sublayers and the variables a layer could train."""

from __future__ import annotations

import weakref

import keras

# What `attach_state` attached to each model, by attribute name, so that a
# model training in its place (a cached stage's top) can carry it too.
_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def flatten_layers(layer: keras.layers.Layer, include_self: bool = True) -> list:
    """Every layer nested in `layer` (depth first, each once), optionally itself.

    Relies on `Layer._flatten_layers(include_self=..., recursive=True)`, which
    Keras uses for `Model.layers`-independent traversal (it reaches layers
    held in attributes, lists and dicts, not only a Functional graph's nodes).
    """
    return list(layer._flatten_layers(include_self=include_self))


def trainable_capable_variables(layer: keras.layers.Layer) -> list:
    """The variables `layer` itself owns and would train were it trainable.

    Unlike `layer.trainable_variables`, this ignores the current `trainable`
    flag of the layer (and of the layers around it). Relies on Keras keeping
    the layer's own variables created with `trainable=True` in
    `Layer._trainable_variables` whatever the layer's flag.
    """
    return list(layer._trainable_variables)


def track_variable(layer: keras.layers.Layer, variable: keras.Variable) -> None:
    """Makes `layer` own `variable`, created outside its `add_weight`.

    For wrapping variables that already exist (a SavedModel's), which
    `add_weight` cannot adopt. Relies on `Layer._track_variable(variable)`,
    which files the variable under the layer's trainable or non-trainable
    weights by its `trainable` flag (and sets that flag to `False` while the
    layer is frozen), as `add_weight` does.
    """
    layer._track_variable(variable)


def call_outputs(layer: keras.layers.Layer) -> list[list]:
    """The symbolic outputs of each call of `layer` in a Functional graph, oldest first.

    One list of output tensors (flattened) per call: a model nested in two
    graphs has two entries, the latest nesting last. Relies on
    `Layer._inbound_nodes` (one `Node` per symbolic call) and
    `Node.output_tensors`.
    """
    return [list(node.output_tensors) for node in layer._inbound_nodes]


def build_at_init(layer: keras.layers.Layer) -> None:
    """Marks `layer` built from its `__init__`, for a layer whose variables all
    exist by then (a wrapped SavedModel's) and that defines no `build`.

    Relies on `Layer._build_at_init()`, which Keras' own layers of that kind
    (`keras.layers.TFSMLayer`, the activations, pooling) call at the end of
    their `__init__`: it sets `built`, runs `_post_build` and locks the layer's
    variable tracking, only when `build` is not overridden.
    """
    layer._build_at_init()


def own_weights(layer: keras.layers.Layer) -> list:
    """The weights `layer` itself owns, trainable first, without its sublayers'.

    Unlike `layer.weights`, which adds every sublayer's weights. Relies on
    Keras keeping a layer's own variables in `Layer._trainable_variables` and
    `Layer._non_trainable_variables` (by the flag they were created with).
    """
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def lora_base_variable(layer: keras.layers.Layer) -> keras.Variable:
    """The variable behind a LoRA layer's kernel (an `Embedding`'s table).

    Keras' LoRA-capable layers keep the base weight LoRA adds to in a private
    attribute, `Dense`, `EinsumDense` and the convolutions in `_kernel`,
    `Embedding` in `_embeddings`, behind a public `kernel` (`embeddings`)
    property that returns it with the LoRA update added once LoRA is enabled.
    Relies on those two attribute names.
    """
    for name in ("_kernel", "_embeddings"):
        variable = getattr(layer, name, None)
        if isinstance(variable, keras.Variable):
            return variable
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) keeps no kernel where Keras' "
        "LoRA layers keep theirs (`_kernel` or `_embeddings`)."
    )


def delete_variable_attributes(layer: keras.layers.Layer, names) -> None:
    """Deletes `layer`'s variable attributes `names` and untracks their variables.

    What `del layer.<name>` does for a variable, without the `gc.collect()`
    Keras' `Layer.__delattr__` runs after each one (a full collection per
    variable: seconds for the factors of a whole model); callers deleting
    many variables collect once after the last. Relies on
    `Layer._untrack_variable(variable)` and on the `__delattr__` of the class
    after `Layer` in the layer's MRO, which `Layer.__delattr__` calls.
    """
    for name in names:
        layer._untrack_variable(getattr(layer, name))
        super(keras.layers.Layer, layer).__delattr__(name)


def attach_state(model: keras.layers.Layer, name: str, value) -> None:
    """Makes `value`, a layer or a metric, part of the built `model`'s state as
    the attribute `name`, outside the model's computation.

    A layer's variables join `model.weights` (so a JAX train step carries
    them as state, and `save_weights` and `.keras` files store them under
    `name`); a metric joins `model.metrics` (so `fit` resets it and logs its
    result). A built layer locks its state against additions; the lock is
    lifted for this one assignment, as Keras' own `Layer._untrack_variable`
    does. A `Sequential` model calls every layer of its layer list in turn,
    so a layer is tracked there by the `InputLayer` that a built `Sequential`
    puts first in that list (whose weights count as the model's) and also
    set as the model's attribute `name`, where saving finds it. Relies on
    `Layer._tracker` (`locked`, `lock`, `unlock`), on Keras tracking a layer
    or metric set as an attribute, and on `Sequential._layers` starting with
    its `InputLayer` once built.
    """
    for holder in _state_holders(model, value):
        with _unlocked(holder):
            setattr(holder, name, value)
    _ATTACHED.setdefault(model, {})[name] = value


def detach_state(model: keras.layers.Layer, name: str, value) -> None:
    """Undoes `attach_state(model, name, value)`: `value`'s variables or its
    metric leave the model. Relies on `Layer._tracker.untrack` (and its
    lock), which Keras' `Layer._untrack_variable` uses for a variable."""
    for holder in _state_holders(model, value):
        with _unlocked(holder):
            holder._tracker.untrack(value)
            if hasattr(holder, name):
                delattr(holder, name)
    _ATTACHED.get(model, {}).pop(name, None)


def attached_state(model: keras.layers.Layer) -> dict:
    """What `attach_state` attached to `model` and `detach_state` has not
    taken off: `{name: value}`, in the order attached."""
    return dict(_ATTACHED.get(model, {}))


def _state_holders(model, value) -> list:
    if not isinstance(model, keras.Sequential) or not isinstance(value, keras.layers.Layer):
        return [model]
    first = model._layers[0] if model._layers else None
    if not isinstance(first, keras.layers.InputLayer):
        raise ValueError(
            f"Sequential model '{model.name}' is not built, so it has no input layer "
            "yet. Build it first, e.g. by calling it on a batch of data."
        )
    return [first, model]


class _unlocked:
    """Lifts a layer's state lock for the duration of a `with` block."""

    def __init__(self, layer):
        self.tracker = layer._tracker

    def __enter__(self):
        self.locked = self.tracker.locked
        self.tracker.unlock()

    def __exit__(self, *exc_info):
        if self.locked:
            self.tracker.lock()
