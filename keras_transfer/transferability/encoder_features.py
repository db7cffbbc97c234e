"""One feature vector per example from any encoder: the pooling that
`kt.prototype_classifier`, `kt.ZeroShotClassifier` and `kt.rank_backbones`
share."""

from __future__ import annotations

from collections.abc import Mapping

import keras

POOLING_NAME = "average_features"
_POOLING = {
    3: keras.layers.GlobalAveragePooling1D,
    4: keras.layers.GlobalAveragePooling2D,
    5: keras.layers.GlobalAveragePooling3D,
}


def encoder_features(encoder: keras.Model) -> keras.Model:
    """`inputs -> encoder -> (batch, features)`, the encoder nested as one layer.

    The encoder's output becomes one vector per example:

    - a KerasHub text backbone's dict: the mean of `"sequence_output"` over
      the tokens its `padding_mask` input keeps (how sentence encoders such
      as the zoo's MiniLM embed a text), else its `"pooled_output"`;
    - a sequence `(batch, steps, channels)` or a feature map
      `(batch, height, width, channels)`: its average over the middle axes;
    - `(batch, features)`: as it is.

    The model's inputs mirror the encoder's (names, dtypes, a dict for
    KerasHub backbones), except that a `padding_mask` input is bool, as
    KerasHub preprocessors make it (integer masks are accepted too).

    Args:
        encoder: a built Keras model with known inputs.

    Returns:
        A `keras.Model` named `<encoder>_features`.

    Example:

    >>> import keras
    >>> conv = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
    >>> encoder_features(conv).output.shape
    (None, 4)
    """
    if not isinstance(encoder, keras.Model):
        raise TypeError(
            f"The encoder must be a Keras model (a backbone), got {type(encoder).__name__}. "
            "Load one with `kt.load_backbone`."
        )
    inputs = _mirror_inputs(_input_structure(encoder))
    features = _pooled(encoder(inputs), inputs, encoder.name)
    return keras.Model(inputs, features, name=f"{encoder.name}_features")


def _input_structure(encoder):
    """The encoder's symbolic inputs: a Functional model's structure (a dict for
    KerasHub backbones), a Sequential model's one input."""
    try:
        return encoder.input
    except (AttributeError, ValueError):
        pass
    inputs = getattr(encoder, "inputs", None)
    if inputs:
        return inputs[0] if len(inputs) == 1 else inputs
    raise ValueError(
        f"The encoder '{encoder.name}' has no defined inputs. Use a Functional or Sequential "
        "model that starts with `keras.Input(shape)`."
    )


def _mirror_inputs(structure):
    if isinstance(structure, Mapping):
        return {name: _mirror_input(tensor, name) for name, tensor in structure.items()}
    return keras.tree.map_structure(lambda tensor: _mirror_input(tensor, tensor.name), structure)


def _mirror_input(tensor, name):
    # KerasHub backbones declare an int32 padding mask but their preprocessors
    # give a bool one: take the bool (the backbone casts it, ints still go in),
    # so that an exported model's signature accepts the preprocessor's output.
    dtype = "bool" if name == "padding_mask" else tensor.dtype
    return keras.Input(batch_shape=tensor.shape, dtype=dtype, name=name)


def _pooled(outputs, inputs, encoder_name: str):
    if isinstance(outputs, Mapping):
        outputs = _from_dict(outputs, inputs, encoder_name)
    if isinstance(outputs, (list, tuple)):
        raise ValueError(
            f"The encoder '{encoder_name}' has {len(outputs)} outputs; pass a model with one "
            "output (the features)."
        )
    rank = len(outputs.shape)
    if rank in _POOLING:
        return _POOLING[rank](name=POOLING_NAME)(outputs)
    if rank != 2:
        raise ValueError(
            f"The encoder '{encoder_name}' outputs shape {outputs.shape}; expected "
            "(batch, features), a sequence or a feature map."
        )
    return outputs


def _from_dict(outputs, inputs, encoder_name):
    has_mask = isinstance(inputs, Mapping) and "padding_mask" in inputs
    if "sequence_output" in outputs and has_mask:
        return keras.layers.GlobalAveragePooling1D(name=POOLING_NAME)(
            outputs["sequence_output"], mask=inputs["padding_mask"]
        )
    if "pooled_output" in outputs:
        return outputs["pooled_output"]
    raise ValueError(
        f"The encoder '{encoder_name}' returns a dict without a pooled output (keys: "
        f"{sorted(outputs)}; no 'pooled_output', nor a 'sequence_output' with a "
        "'padding_mask' input to average it by). Pass an encoder with one output: e.g. "
        "`keras.Model(backbone.input, backbone.output['<the features>'])`."
    )
