"""A classifier around a pretrained backbone: a nested `encoder` (backbone +
pooling) and a `Dense` head, the shape `FeatureCache` and export expect."""

from __future__ import annotations

import keras

from keras_transfer.groups import LayerGroup, LayerGroupPlan, layer_groups

ENCODER_NAME = "encoder"
HEAD_NAME = "head"
# BERT-style backbones' pooler: unused when the encoder mean-pools the sequence.
_UNUSED_POOLER_GROUPS = ("pooled_dense", "pooler")


def image_classifier(backbone, image_shape, num_classes: int, dropout: float = 0.2, seed=0):
    """`images -> backbone -> global average pooling -> Dense(num_classes)`.

    The classifier's input is the backbone's input: resized, scaled images.
    """
    images = keras.Input(image_shape, name="images")
    feature_map = backbone(images)
    if isinstance(feature_map, dict):
        feature_map = feature_map.get("sequence_output", next(iter(feature_map.values())))
    if len(feature_map.shape) == 4:
        pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(feature_map)
    else:
        pooled = feature_map
    encoder = keras.Model(images, pooled, name=ENCODER_NAME)
    return _with_head(encoder, images.shape[1:], "float32", num_classes, dropout, seed)


def text_classifier(backbone, sequence_length: int, num_classes: int, dropout=0.1, seed=0):
    """`token inputs -> backbone -> masked mean of the sequence -> Dense(num_classes)`.

    The classifier takes the backbone's inputs (`token_ids`, `padding_mask`,
    and `segment_ids` where the backbone has them), as KerasHub
    preprocessors produce them.
    """
    names = list(backbone.input) if isinstance(backbone.input, dict) else None
    if names is None or "token_ids" not in names or "padding_mask" not in names:
        raise ValueError(
            f"Backbone '{backbone.name}' does not take KerasHub text inputs "
            "(`token_ids` and `padding_mask`); use a KerasHub text backbone or a zoo text model."
        )
    inputs = {
        name: keras.Input(
            (sequence_length,), dtype="bool" if name == "padding_mask" else "int32", name=name
        )
        for name in names
    }
    sequence = backbone(inputs)["sequence_output"]
    pooled = keras.layers.GlobalAveragePooling1D(name="mean_pool")(
        sequence, mask=inputs["padding_mask"]
    )
    encoder = keras.Model(inputs, pooled, name=ENCODER_NAME)
    inner = {name: keras.Input(t.shape[1:], dtype=t.dtype, name=name) for name, t in inputs.items()}
    features = encoder(inner)
    return _head_model(inner, features, num_classes, dropout, seed)


def _with_head(encoder, input_shape, dtype, num_classes, dropout, seed):
    inputs = keras.Input(input_shape, dtype=dtype, name="inputs")
    return _head_model(inputs, encoder(inputs), num_classes, dropout, seed)


def _head_model(inputs, features, num_classes, dropout, seed):
    hidden = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(features)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed), name=HEAD_NAME
    )(hidden)
    return keras.Model(inputs, logits, name="classifier")


def groups_that_train(model) -> LayerGroupPlan:
    """`kt.layer_groups(model)`, with an unused BERT pooler merged into the head.

    The encoder mean-pools the sequence, so the pooler gets no gradient; as a
    group of its own it would take a stage of the schedule and a step of the
    learning-rate decay.
    """
    groups = layer_groups(model)
    unused = [group for group in groups[:-1] if group.name in _UNUSED_POOLER_GROUPS]
    if not unused:
        return groups
    head = groups[-1]
    merged = LayerGroup(head.name, [layer for g in unused for layer in g.layers] + head.layers)
    kept = [group for group in groups[:-1] if group not in unused]
    return LayerGroupPlan([*kept, merged], model)


def spread_schedule(num_groups: int, epochs: int) -> dict:
    """Unfreezes from the top so that every group trains in the last epoch.

    >>> spread_schedule(10, 3)
    {0: 4, 1: 7, 2: 'all'}
    >>> spread_schedule(3, 5)
    {0: 1, 1: 2, 3: 'all'}
    """
    schedule: dict = {}
    previous = 0
    for epoch in range(epochs):
        count = -(-num_groups * (epoch + 1) // epochs)
        if count != previous:
            schedule[epoch] = "all" if count >= num_groups else count
            previous = count
    return schedule
