"""TensorFlow functions that turn raw serving inputs into model inputs.

TensorFlow only: these run inside the exported SavedModel's serving
signature, whatever backend trained the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class ImageSpec:
    """How raw uint8 images become the model's image input.

    Args:
        height, width, channels: the model's input image shape.
        scale, offset: `pixels * scale + offset`, per image or per channel,
            as KerasHub's `ImageConverter` and `keras.layers.Rescaling` do.
        interpolation: a `tf.image.resize` method.
        crop_to_aspect_ratio: take the largest central crop of the model's
            aspect ratio before resizing (KerasHub's `ImageConverter`
            default) instead of stretching the image.
    """

    height: int
    width: int
    channels: int
    scale: float | tuple = 1.0
    offset: float | tuple = 0.0
    interpolation: str = "bilinear"
    crop_to_aspect_ratio: bool = False


def image_spec_from_converter(converter, height, width, channels) -> ImageSpec:
    """Reads resize and scaling settings from a KerasHub `ImageConverter`."""
    image_size = converter.image_size or (height, width)
    return ImageSpec(
        height=int(image_size[0]),
        width=int(image_size[1]),
        channels=channels,
        scale=_constant_or_one(converter.scale, 1.0),
        offset=_constant_or_one(converter.offset, 0.0),
        interpolation=converter.interpolation,
        crop_to_aspect_ratio=bool(converter.crop_to_aspect_ratio),
    )


def prepare_images(images: tf.Tensor, spec: ImageSpec) -> tf.Tensor:
    """uint8 `[batch, height, width, channels]` of any size -> model input."""
    pixels = tf.cast(images, tf.float32)
    if spec.crop_to_aspect_ratio:
        pixels = _central_crop_to_aspect_ratio(pixels, spec.height / spec.width)
    pixels = tf.image.resize(pixels, (spec.height, spec.width), method=spec.interpolation)
    return pixels * tf.constant(spec.scale, tf.float32) + tf.constant(spec.offset, tf.float32)


def _central_crop_to_aspect_ratio(pixels, aspect_ratio: float):
    shape = tf.shape(pixels)
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    crop_height = tf.minimum(height, width * aspect_ratio)
    crop_width = tf.minimum(width, height / aspect_ratio)
    top = tf.cast((height - crop_height) / 2, tf.int32)
    left = tf.cast((width - crop_width) / 2, tf.int32)
    return pixels[
        :,
        top : top + tf.cast(crop_height, tf.int32),
        left : left + tf.cast(crop_width, tf.int32),
        :,
    ]


def _constant_or_one(value, default):
    if value is None:
        return default
    if isinstance(value, (list, tuple)):
        return tuple(float(v) for v in value)
    return float(value)


def to_probabilities(outputs: tf.Tensor, activation: str) -> tf.Tensor:
    """Model outputs -> `[batch, num_classes]` class probabilities."""
    outputs = tf.cast(outputs, tf.float32)
    if activation == "softmax":
        return tf.nn.softmax(outputs, axis=-1)
    if activation == "sigmoid":
        positive = tf.sigmoid(outputs)
        return tf.concat([1.0 - positive, positive], axis=-1)
    if activation == "binary_probability":
        return tf.concat([1.0 - outputs, outputs], axis=-1)
    return outputs
