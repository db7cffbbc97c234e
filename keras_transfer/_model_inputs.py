"""Plain `keras.Input`s for the serving models the training models hand out
(a `DomainAdaptationModel`'s classifier, a `MultiTaskModel`'s task models)."""

from __future__ import annotations

import keras


def known_input_shape(layer):
    """The input shape of a built Functional or Sequential model, else None."""
    inputs = _known_inputs(layer)
    if inputs is None:
        return None
    return keras.tree.map_structure(lambda tensor: tuple(tensor.shape), inputs)


def plain_inputs(backbone, input_shape, default_dtype):
    """`keras.Input`s for one batch of the backbone's inputs.

    Dtypes and names come from the backbone's own inputs where it has them
    (token ids stay integers), else `default_dtype`.
    """
    known = _known_inputs(backbone)
    if known is not None:
        return keras.tree.map_structure(
            lambda tensor: keras.Input(
                shape=tuple(tensor.shape[1:]), dtype=tensor.dtype, name=tensor.name
            ),
            known,
        )
    return keras.tree.map_shape_structure(
        lambda shape: keras.Input(shape=tuple(shape[1:]), dtype=default_dtype), input_shape
    )


def _known_inputs(layer):
    if not (isinstance(layer, keras.Model) and layer.built):
        return None
    if isinstance(layer, keras.Sequential):
        # Its own `keras.Input`; `input` would be what it was first called on.
        inputs = getattr(layer, "inputs", None)
        return inputs[0] if inputs and len(inputs) == 1 else None
    try:
        return layer.input
    except (AttributeError, ValueError):
        return None
