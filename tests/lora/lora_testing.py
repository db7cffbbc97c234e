"""Tiny models with LoRA-capable layers, and a numpy view of a LoRA layer."""

import keras
import numpy as np
from testing_utils import dense_model, tiny_bert, values

import keras_transfer as kt
from keras_transfer._keras_internals.layers import flatten_layers
from keras_transfer.groups.layer_variables import lora_factors


def lora_dense_model(rank=2, alpha=None, name="model", **kwargs):
    """`dense_model` (groups a, b, head) with LoRA in a and b, and factors B
    set away from zero so that both factors have gradients."""
    model = dense_model(name=name)
    kt.enable_lora(model, rank=rank, alpha=alpha, **kwargs)
    perturb_factors(model)
    return model


def perturb_factors(model, seed=1, scale=0.3):
    rng = np.random.default_rng(seed)
    for layer in flatten_layers(model):
        if getattr(layer, "lora_enabled", False):
            for name in ("lora_kernel_b", "lora_embeddings_b"):
                factor = getattr(layer, name, None)
                if factor is not None:
                    factor.assign(scale * rng.normal(size=factor.shape).astype("float32"))


def factor_paths(model):
    return [v.path for v in lora_factors(model)]


def bert_classifier(num_layers=2):
    """A tiny KerasHub BERT with a two-class head named `logits`."""
    backbone = tiny_bert(num_layers=num_layers)
    inputs = backbone.input
    logits = keras.layers.Dense(2, name="logits")(backbone(inputs)["pooled_output"])
    return keras.Model(inputs, logits, name="classifier")


def bert_batch(samples=4, length=12, vocabulary_size=50, seed=0):
    rng = np.random.default_rng(seed)
    x = {
        "token_ids": rng.integers(1, vocabulary_size, size=(samples, length)).astype("int32"),
        "segment_ids": np.zeros((samples, length), "int32"),
        "padding_mask": np.ones((samples, length), "int32"),
    }
    return x, rng.integers(0, 2, size=(samples,)).astype("int32")


def snapshot(model):
    return {v.path: value for v, value in zip(model.weights, values(model.weights))}


def changed_paths(before, model):
    after = snapshot(model)
    return sorted(path for path in before if not np.array_equal(before[path], after[path]))
