"""`kt.export_saved_model`: a SavedModel that serves raw inputs."""

from __future__ import annotations

import keras

from keras_transfer.export import serving_inputs
from keras_transfer.groups.hooks import ServingModel
from keras_transfer.lora.merge_lora import merged_copy

_OUTPUT_KINDS = ("auto", "logits", "probabilities")
_SERVING_ENDPOINT = "serving_default"


def export_saved_model(
    model: keras.Model,
    path: str,
    preprocessor=None,
    class_names: list[str] | None = None,
    outputs: str = "auto",
    image_scale: float | tuple | None = None,
    image_offset: float | tuple | None = None,
    verbose: bool = False,
) -> str:
    """Exports a classifier as a SavedModel whose signature takes raw inputs.

    A model trained on token ids or on resized, scaled images is not what a
    server receives. The exported `serving_default` signature takes what
    clients send and does the rest inside the SavedModel:

    - text models (a `preprocessor` is given, e.g. a KerasHub
      `TextClassifierPreprocessor` or tokenizer): a `text` string tensor of
      shape `[batch]`, tokenised inside;
    - image models (one input of shape `(height, width, channels)`): an
      `images` uint8 tensor `[batch, any height, any width, channels]`,
      resized and scaled inside (`image_scale` / `image_offset`, or the
      settings of a KerasHub `ImageConverter` given as `preprocessor`);
    - any other model: its own inputs.

    It returns `probabilities` `[batch, num_classes]`, `class_id` `[batch]`
    and `label` `[batch]` (the class name, or the id as a string).

    The SavedModel needs only TensorFlow to serve: `tf.saved_model.load`,
    TF Serving or `saved_model_cli` (a KerasHub tokenizer adds ops from
    `tensorflow_text`, so `import tensorflow_text` before loading a text
    model). Models trained on the JAX backend export too (through
    `jax2tf`); the PyTorch backend cannot export a SavedModel: save with
    `model.save("model.keras")` and export under the TensorFlow backend.

    A model with LoRA layers (`kt.enable_lora`) serves merged: the export
    is made from a copy with each LoRA update folded into its kernel, so the
    served graph holds one kernel per layer and no factors, and the model
    itself keeps its adapters.

    A training model that implements `serving_model()` (the
    `keras_transfer.groups.hooks.ServingModel` hook) exports the model that
    hook returns: `kt.DistillationModel` its student,
    `kt.DomainAdaptationModel` its feature extractor and task head on plain
    inputs, never a teacher or a domain head.

    Args:
        model: a built classifier, or a training model with a
            `serving_model()`; its outputs are logits or probabilities.
        path: the SavedModel folder to write.
        preprocessor: optional KerasHub preprocessor, tokenizer or
            `ImageConverter` (or any Keras layer mapping raw strings to the
            model's inputs). Defaults to `None`.
        class_names: optional names of the classes, in class-id order.
        outputs: `"logits"`, `"probabilities"` or `"auto"` (the default:
            read from the last layer's activation).
        image_scale, image_offset: raw pixels become
            `pixels * image_scale + image_offset` before the model sees them.
            Default: the `ImageConverter`'s settings, else 1 and 0.
        verbose: print the signatures Keras writes.

    Returns:
        `path`.

    Example:

    >>> import keras, pytest
    >>> if keras.config.backend() == "torch":
    ...     pytest.skip("SavedModel export needs the TensorFlow or JAX backend")
    >>> import os, tempfile
    >>> import tensorflow as tf
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(3, name="head"),
    ... ])
    >>> path = os.path.join(tempfile.mkdtemp(), "served")
    >>> _ = kt.export_saved_model(
    ...     model, path, class_names=["a", "b", "c"], image_scale=1 / 255
    ... )
    >>> served = tf.saved_model.load(path)
    >>> result = served.serving_default(images=tf.zeros((2, 32, 20, 1), tf.uint8))
    >>> sorted(result)
    ['class_id', 'label', 'probabilities']
    >>> result["probabilities"].shape
    TensorShape([2, 3])
    """
    require_exporting_backend()
    model = merged_copy(_serving_model(model))
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built; call it on a batch or give it a "
            "`keras.Input` before exporting."
        )
    activation = _output_activation(model, outputs)
    num_classes = _num_classes(model, activation)
    class_names = _class_names(class_names, num_classes)
    archive = keras.export.ExportArchive()
    model_fn = archive.track_and_add_endpoint(
        "model_outputs", model, input_signature=[_input_signature(_symbolic_input(model))]
    )
    serve = _serving_function(
        model, model_fn, preprocessor, activation, class_names, image_scale, image_offset, archive
    )
    archive.add_endpoint(_SERVING_ENDPOINT, serve)
    archive.write_out(path, verbose=verbose)
    return path


def _symbolic_input(model):
    """The model's input structure (Sequential models keep theirs inside)."""
    return model.inputs[0] if isinstance(model, keras.Sequential) else model.input


def _symbolic_output(model):
    outputs = model.outputs
    return outputs[0] if len(outputs) == 1 else outputs


def require_exporting_backend():
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise RuntimeError(
            f"`kt.export_saved_model` needs the TensorFlow or JAX backend; this is "
            f"'{backend}'. Save the model with `model.save('model.keras')`, then "
            "load and export it in a process started with KERAS_BACKEND=tensorflow."
        )


def _serving_model(model):
    """The part of a training model that serves predictions."""
    if isinstance(model, ServingModel):
        model = model.serving_model()
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"`serving_model()` must return a Keras model, got {type(model).__name__}."
            )
        return model
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a Keras model, got {type(model).__name__}.")
    return model


def _output_activation(model, outputs: str) -> str:
    if outputs not in _OUTPUT_KINDS:
        raise ValueError(f"`outputs` must be one of {_OUTPUT_KINDS}, got {outputs!r}.")
    num_outputs = _symbolic_output(model).shape[-1]
    if outputs == "auto":
        outputs = _read_output_kind(model)
    if outputs == "logits":
        return "sigmoid" if num_outputs == 1 else "softmax"
    return "binary_probability" if num_outputs == 1 else "identity"


def _read_output_kind(model) -> str:
    last_layer = model.layers[-1]
    activation = getattr(getattr(last_layer, "activation", None), "__name__", None)
    if activation in ("softmax", "sigmoid"):
        return "probabilities"
    if activation == "linear":
        return "logits"
    if isinstance(last_layer, keras.layers.Softmax):
        return "probabilities"
    raise ValueError(
        f"Could not tell whether model '{model.name}' outputs logits or "
        f"probabilities (its last layer is {type(last_layer).__name__} "
        f"'{last_layer.name}'). Pass `outputs='logits'` or `outputs='probabilities'`."
    )


def _num_classes(model, activation: str) -> int:
    output = _symbolic_output(model)
    if not isinstance(output, keras.KerasTensor) or len(output.shape) != 2:
        raise ValueError(
            f"`kt.export_saved_model` exports classifiers with one output of shape "
            f"(batch, classes); model '{model.name}' outputs {output}."
        )
    units = output.shape[-1]
    return 2 if activation in ("sigmoid", "binary_probability") else units


def _class_names(class_names, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(index) for index in range(num_classes)]
    class_names = [str(name) for name in class_names]
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` has {len(class_names)} names but the model predicts "
            f"{num_classes} classes; give one name per class, in class-id order."
        )
    return class_names


def _input_signature(model_input):
    import tensorflow as tf

    return keras.tree.map_structure(
        lambda tensor: tf.TensorSpec(tensor.shape, tensor.dtype, name=tensor.name),
        model_input,
    )


def _serving_function(
    model, model_fn, preprocessor, activation, class_names, scale, offset, archive
):
    import tensorflow as tf

    prepare, raw_signature = _raw_input_preparation(model, preprocessor, scale, offset, archive)
    names = tf.constant(class_names)

    def predict(raw_inputs):
        probabilities = serving_inputs.to_probabilities(model_fn(prepare(raw_inputs)), activation)
        class_id = tf.argmax(probabilities, axis=-1)
        return {
            "probabilities": probabilities,
            "class_id": class_id,
            "label": tf.gather(names, class_id),
        }

    # The parameter's name is the keyword that callers of the loaded function use.
    def serve_text(text):
        return predict(text)

    def serve_images(images):
        return predict(images)

    def serve_inputs(inputs):
        return predict(inputs)

    serve = {"text": serve_text, "images": serve_images}.get(_raw_signature_name(raw_signature))
    return tf.function(serve or serve_inputs, input_signature=[raw_signature])


def _raw_signature_name(signature) -> str | None:
    return getattr(signature, "name", None)


def _raw_input_preparation(model, preprocessor, scale, offset, archive):
    """(function from raw inputs to model inputs, the raw input signature)."""
    import tensorflow as tf

    image_shape = _image_input_shape(model)
    converter = _image_converter(preprocessor)
    if image_shape is not None and (preprocessor is None or converter is not None):
        spec = _image_spec(image_shape, converter, scale, offset)
        signature = tf.TensorSpec((None, None, None, spec.channels), tf.uint8, name="images")
        return (lambda images: serving_inputs.prepare_images(images, spec)), signature
    if scale is not None or offset is not None:
        raise ValueError(
            "`image_scale` and `image_offset` apply to models with one image input "
            f"(height, width, channels); model '{model.name}' takes {_symbolic_input(model)}."
        )
    if preprocessor is None:
        return (lambda inputs: inputs), _input_signature(_symbolic_input(model))
    preprocessor(tf.constant([""]))  # builds it, so that it can be tracked
    _track_tf_resources(preprocessor, archive)
    signature = tf.TensorSpec((None,), tf.string, name="text")
    return (lambda text: _model_inputs(model, preprocessor(text))), signature


def _image_input_shape(model):
    model_input = _symbolic_input(model)
    if not isinstance(model_input, keras.KerasTensor) or len(model_input.shape) != 4:
        return None
    if not keras.backend.is_float_dtype(model_input.dtype):
        return None
    height, width, channels = model_input.shape[1:]
    if None in (height, width, channels):
        raise ValueError(
            f"Model '{model.name}' takes images of shape {model_input.shape[1:]}; "
            "export needs a fixed (height, width, channels) to resize raw images to. "
            "Rebuild it on `keras.Input((height, width, channels))`."
        )
    return height, width, channels


def _image_converter(preprocessor):
    if preprocessor is None:
        return None
    converter = getattr(preprocessor, "image_converter", None) or preprocessor
    return converter if hasattr(converter, "crop_to_aspect_ratio") else None


def _image_spec(image_shape, converter, scale, offset):
    height, width, channels = image_shape
    if converter is not None:
        spec = serving_inputs.image_spec_from_converter(converter, height, width, channels)
    else:
        spec = serving_inputs.ImageSpec(height, width, channels)
    if (spec.height, spec.width) != (height, width):
        raise ValueError(
            f"The image converter resizes to {(spec.height, spec.width)} but the model "
            f"takes {(height, width)} images."
        )
    return serving_inputs.ImageSpec(
        height,
        width,
        channels,
        scale=spec.scale if scale is None else scale,
        offset=spec.offset if offset is None else offset,
        interpolation=spec.interpolation,
        crop_to_aspect_ratio=spec.crop_to_aspect_ratio,
    )


def _model_inputs(model, preprocessed):
    """Matches a preprocessor's output to the model's input structure."""
    model_input = _symbolic_input(model)
    if not isinstance(preprocessed, dict) or isinstance(model_input, dict):
        return preprocessed
    input_name = getattr(model_input, "name", None)
    if input_name in preprocessed:
        return preprocessed[input_name]
    if "token_ids" in preprocessed:
        return preprocessed["token_ids"]
    raise ValueError(
        f"The preprocessor returns {sorted(preprocessed)} but model '{model.name}' "
        f"takes one input, '{input_name}'. Name the model's input after one of them."
    )


def _track_tf_resources(layer, archive):
    """Tracks the TensorFlow resources (vocabulary tables, tokenizers) that a
    KerasHub preprocessor holds, so that they are saved with the signature."""
    import tensorflow as tf

    if isinstance(layer, tf.__internal__.tracking.Trackable):
        archive.track(layer)
        return
    for value in _attribute_values(layer):
        if isinstance(value, tf.__internal__.tracking.Trackable):
            archive.track(value)


def _attribute_values(layer, seen=None):
    seen = set() if seen is None else seen
    if id(layer) in seen:
        return
    seen.add(id(layer))
    for value in vars(layer).values():
        if isinstance(value, keras.layers.Layer):
            yield from _attribute_values(value, seen)
        else:
            yield value
