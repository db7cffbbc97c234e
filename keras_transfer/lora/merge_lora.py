"""`kt.merge_lora`: fold LoRA factors into the kernels, leaving a plain model."""

from __future__ import annotations

import keras

from keras_transfer._keras_internals.layers import lora_base_variable
from keras_transfer._keras_internals.training import sync_jax_state
from keras_transfer.groups.layer_variables import LORA_FACTOR_ATTRIBUTES
from keras_transfer.lora._lora_layers import layer_path, lora_layers, retrace


def merge_lora(model: keras.Model) -> None:
    """Folds every LoRA update into its kernel and turns LoRA off, in place.

    Each layer's kernel (an `Embedding`'s table) becomes `W + (alpha / rank)
    * A @ B`, exactly the kernel Keras' LoRA layer computes in its forward
    pass (and writes when saving), so the outputs do not change. The factors
    are then removed and the layers' `lora_enabled` is `False`: the model
    saves, exports and serves as a plain model, with no LoRA in its config
    and no extra matrix product per call. Under a mixed-precision policy the
    merged kernel is, as in Keras, computed in the compute dtype.

    Merge when training is done: afterwards the merged kernels follow their
    layer's `trainable` flag; call `kt.freeze` / `kt.unfreeze` and `compile`
    again before training the merged model further.

    Args:
        model: a model with LoRA enabled (`kt.enable_lora`,
            `kt.load_adapters` or Keras' own `layer.enable_lora`).

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    >>> _ = kt.enable_lora(model, rank=2)
    >>> x = np.ones((2, 4), "float32")
    >>> before = model.predict(x, verbose=0)
    >>> kt.merge_lora(model)
    >>> bool(np.allclose(model.predict(x, verbose=0), before, atol=1e-6))
    True
    >>> any(getattr(layer, "lora_enabled", False) for layer in model.layers)
    False
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no layer with LoRA enabled, so there is nothing to "
            "merge. Merge a model after `kt.enable_lora(model)` (or `kt.load_adapters`) "
            "and its training."
        )
    quantized = [layer for layer in layers if getattr(layer, "quantization_mode", None)]
    if quantized:
        raise ValueError(
            f"Layer '{layer_path(quantized[0])}' is quantized "
            f"({quantized[0].quantization_mode}), and merging LoRA into a quantized kernel "
            "needs requantization: save the model with `model.save(...)`, which Keras "
            "merges and requantizes, or merge before quantizing."
        )
    sync_jax_state(model)
    for layer in layers:
        _merge(layer)
    retrace(model)


def _merge(layer) -> None:
    base = lora_base_variable(layer)
    merged_property = "embeddings" if isinstance(layer, keras.layers.Embedding) else "kernel"
    merged = keras.ops.convert_to_numpy(getattr(layer, merged_property))
    for name in LORA_FACTOR_ATTRIBUTES:
        if getattr(layer, name, None) is not None:
            # Keras untracks a variable attribute when it is deleted.
            delattr(layer, name)
    layer.lora_enabled = False
    layer.lora_rank = None
    layer.lora_alpha = None
    base.assign(merged)
    base.trainable = layer.trainable
