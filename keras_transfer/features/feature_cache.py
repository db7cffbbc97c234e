"""`FeatureCache`: train a head on a frozen backbone's features, computed once."""

from __future__ import annotations

import math

import keras

from keras_transfer._checks import check_integer
from keras_transfer._keras_internals.layers import call_outputs
from keras_transfer.features._sink import Sink, cache_file_prefix
from keras_transfer.features.pipeline import (
    augmentation_layers,
    is_dataset,
    numpy_batches,
    predict_padded,
    random_ops,
)


class FeatureCache:
    """Runs a frozen backbone once over a dataset and trains the head on it.

    With a frozen backbone, running it every epoch only recomputes the same
    features. `FeatureCache` splits a compiled model into its backbone (a
    nested model inside it) and its head (the layers after it), runs the
    backbone once in inference mode (in memory, or into raw binary files on
    disk, memory-mapped, for data larger than memory), then trains the head on the cached features
    with the model's own compile settings. The head's layers are the model's
    layers, so afterwards `model` is the full model, backbone plus trained head,
    ready for `kt.FreezeSchedule` and export.

    It refuses a backbone with trainable weights (its features would change as
    it trains) and random layers before the backbone or augmentation inside it
    (cached features would freeze one random draw). A `tf.data` pipeline that
    draws random numbers (augmentation in a `map`) is refused too; shuffling is
    fine.

    Args:
        model: a compiled Functional or Sequential model that contains its
            backbone as a nested model, e.g. `Sequential([backbone, head...])`.
        backbone: the backbone layer or its name; defaults to the model's only
            nested model.
        directory: `None` (default) keeps features in memory; a folder path
            stores them there as raw `.bin` files (one per array, no
            header), read back memory-mapped as `np.memmap`.
        batch_size: batch size of the feature pass over array inputs.
            Defaults to 32. Every batch of the pass runs at this size (a
            dataset's: at its largest batch so far), a shorter last batch
            padded, so that the backbone's predict step is traced once.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)], name="bb")
    >>> backbone.trainable = False
    >>> model = keras.Sequential([keras.Input((4,)), backbone, keras.layers.Dense(1)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> cache = kt.FeatureCache(model)
    >>> history = cache.fit(np.ones((16, 4)), np.ones((16, 1)), epochs=2, verbose=0)
    >>> model.predict(np.ones((2, 4)), verbose=0).shape
    (2, 1)
    """

    def __init__(self, model: keras.Model, backbone=None, directory=None, batch_size: int = 32):
        if not getattr(model, "compiled", False):
            raise ValueError(
                "FeatureCache trains the head with the model's compile settings: "
                "call `model.compile(optimizer, loss, metrics)` first."
            )
        self.model = model
        self.backbone = _find_backbone(model, backbone)
        _check_no_randomness(model, self.backbone)
        # The extractor is everything up to the backbone's output, layers
        # before the backbone (input scaling, say) included.
        self.extractor, self.head = _split(model, self.backbone)
        _check_frozen(self.extractor, self.backbone)
        self.directory = directory
        self.batch_size = check_integer(
            batch_size, "batch_size", "examples per backbone pass", low=1
        )
        self._extracted: dict = {}
        # The batch size the extractor is traced for: `batch_size`, or a
        # dataset's largest batch; validation data reuses it.
        self._pass_size = self.batch_size

    def extract(self, x, y=None):
        """Runs the backbone once over `x`; returns `(features, labels)`.

        `x` is an array (or a dict/list of arrays) with labels `y`, or a
        `tf.data.Dataset` of `(inputs, labels)` batches. Batches stream
        through the backbone into memory or, with `directory`, into raw
        `.bin` files that are then memory-mapped. Results are kept, so extracting the
        same object again costs nothing.
        """
        key = (id(x), id(y))
        if key not in self._extracted:
            if is_dataset(x):
                _check_dataset_is_deterministic(x)
            elif not len(keras.tree.flatten(x)[0]):
                raise ValueError(_NO_EXAMPLES)
            sink = Sink(
                self.directory,
                cache_file_prefix(len(self._extracted)),
                memory_limit_bytes=math.inf if self.directory is None else 0,
                disk_limit_bytes=math.inf,
            )
            for inputs, labels in numpy_batches(x, y, self.batch_size):
                self._pass_size = max(self._pass_size, len(keras.tree.flatten(inputs)[0]))
                features = predict_padded(self.extractor, inputs, self._pass_size)
                sink.add(features=features, labels=labels)
            if "features" not in sink.structure:
                raise ValueError(_NO_EXAMPLES)
            # Keep x and y alive so that their ids stay theirs.
            self._extracted[key] = (x, y, sink.get("features"), sink.get("labels"))
        return self._extracted[key][2:]

    def fit(self, x, y=None, validation_data=None, **fit_kwargs) -> keras.callbacks.History:
        """Trains the head on cached features; `fit_kwargs` go to `Model.fit`.

        `validation_data` may be `(x_val, y_val)` or a dataset; its features
        are cached too.
        """
        features, labels = self.extract(x, y)
        if validation_data is not None:
            validation_data = (
                self.extract(validation_data)
                if is_dataset(validation_data)
                else self.extract(*validation_data)
            )
        if not self.head.compiled:
            self.head.compile_from_config(self.model.get_compile_config())
        return self.head.fit(features, labels, validation_data=validation_data, **fit_kwargs)


def _find_backbone(model, backbone):
    if isinstance(backbone, str):
        return model.get_layer(backbone)
    if backbone is not None:
        if backbone not in model.layers:
            raise ValueError(f"The backbone '{backbone.name}' is not a layer of '{model.name}'.")
        return backbone
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        found = [layer.name for layer in nested]
        raise ValueError(
            f"Model '{model.name}' has {len(nested)} nested models ({found}); "
            "FeatureCache needs to know which is the backbone: pass "
            "`backbone=<layer or name>`."
        )
    return nested[0]


def _check_frozen(extractor, backbone):
    if extractor.trainable_weights:
        names = [layer.name for layer in extractor.layers if layer.trainable_weights]
        raise ValueError(
            f"The backbone '{backbone.name}' (or a layer before it: {names}) has "
            "trainable weights, so its features would change during training and "
            "cannot be cached. Freeze it first (`backbone.trainable = False`); "
            "unfreeze it after the head is trained."
        )


def _check_no_randomness(model, backbone):
    index = model.layers.index(backbone)
    before = [layer for layer in model.layers[:index] if _draws_random_numbers(layer)]
    inside = augmentation_layers(backbone, include_self=False)
    random_layers = [layer.name for layer in before + inside]
    if random_layers:
        raise ValueError(
            f"Random layers {random_layers} act on the inputs of the backbone: cached "
            "features would keep one draw of them forever. Move the augmentation "
            "out of the model (cache un-augmented features), or train without "
            "FeatureCache."
        )


def _draws_random_numbers(layer) -> bool:
    return bool(augmentation_layers(layer)) or any(
        isinstance(value, keras.random.SeedGenerator) for value in vars(layer).values()
    )


def _split(model, backbone) -> tuple[keras.Model, keras.Model]:
    """(extractor, head): the model cut at the backbone's output."""
    if isinstance(model, keras.Sequential):
        index = model.layers.index(backbone)
        extractor = keras.Sequential(model.layers[: index + 1], name=f"{model.name}_extractor")
        extractor.build(model.inputs[0].shape)
        head = keras.Sequential(model.layers[index + 1 :], name=f"{model.name}_head")
        head.build(backbone.output.shape)
        return extractor, head
    errors = []
    # The backbone's output in this model's graph is the output of its call
    # here: the latest one, unless it was nested in another graph since.
    for outputs in reversed(call_outputs(backbone)):
        try:
            outputs = outputs[0] if len(outputs) == 1 else outputs
            head = keras.Model(outputs, model.outputs, name=f"{model.name}_head")
            extractor = keras.Model(model.inputs, outputs, name=f"{model.name}_extractor")
            return extractor, head
        except ValueError as error:
            errors.append(str(error).splitlines()[0])
    raise ValueError(
        f"Could not cut model '{model.name}' after its backbone '{backbone.name}' "
        f"({'; '.join(errors)}). FeatureCache needs the head to depend on the "
        "backbone's output only."
    )


def _check_dataset_is_deterministic(dataset):
    found = random_ops(dataset)
    if found:
        raise ValueError(
            f"The dataset draws random numbers ({sorted(found)}), e.g. random "
            "augmentation in a `map`: cached features would keep one draw. Cache "
            "the un-augmented dataset, or train without FeatureCache."
        )


_NO_EXAMPLES = (
    "FeatureCache got no examples to run the backbone on: the data is empty. "
    "Check how it was loaded or filtered."
)
