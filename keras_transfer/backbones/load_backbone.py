"""`kt.load_backbone` and `kt.load_preprocessor`: one entry point for every hub.

KerasHub presets go through KerasHub's own `from_preset` (built-in names,
`kaggle://`, `hf://`, local preset folders and local Hugging Face checkpoint
folders); `keras.applications` models are built by name; KerasCV backbones
are taken as objects or built from their preset names; TF SavedModels (TF-Hub
handles and local folders) are wrapped in `kt.HubLayer`.
"""

from __future__ import annotations

import os

import keras

from keras_transfer.backbones.hub_handles import is_url
from keras_transfer.backbones.hub_layer import HubLayer
from keras_transfer.backbones.keras_cv_support import import_keras_cv

ZOO_NAMES = ("minilm_l6", "efficientnet_lite0_imagenet")
_PREPROCESSOR_TASKS = ("TextClassifierPreprocessor", "ImageClassifierPreprocessor")


def load_backbone(spec, **kwargs) -> keras.Model:
    """Loads a pretrained backbone from any hub as a Keras 3 model.

    Args:
        spec: what to load:
            - a `keras_transfer.zoo` name (`"minilm_l6"`,
              `"efficientnet_lite0_imagenet"`): real weights that install offline;
            - a KerasHub preset: a built-in name (`"bert_base_en"`), a
              `kaggle://` or `hf://` handle, a local preset folder or a local
              Hugging Face checkpoint folder;
            - a `keras.applications` model name (`"MobileNetV2"`), built with
              `include_top=False` and `weights="imagenet"` unless overridden;
            - `"keras_cv:<preset>"` for a KerasCV backbone preset (needs the
              `keras-cv` extra, which works with Keras 3.15 only), or an
              already built Keras model (a KerasCV backbone object, say),
              returned as it is;
            - a TF SavedModel: a local folder, or an `http(s)://` URL (a
              tfhub.dev or Kaggle Models handle, or any URL serving TF-Hub's
              compressed format; needs the `hub` extra), wrapped in
              `kt.HubLayer` (TensorFlow backend only; pass `input_shape` and
              `input_dtype`).
            Names come first: a zoo, `keras.applications` or built-in KerasHub
            preset name always means that model, even where the working
            folder holds a folder of the same name (write `"./name"` for the
            folder).
        **kwargs: passed to the loader (`from_preset`, the application
            constructor or `kt.HubLayer`).

    Security: a TF SavedModel is a program, not data. TensorFlow's security
    guidance ("Using TensorFlow securely",
    https://github.com/tensorflow/tensorflow/blob/master/SECURITY.md) says that
    running an untrusted model is equivalent to running untrusted code: load
    only SavedModels you trust, or inside a sandbox. `load_backbone` loads a
    SavedModel only from the handle or folder you name in `spec`, never from
    a path it finds itself. KerasHub presets are read by KerasHub's
    `from_preset`, which deserializes their `config.json` in Keras' safe mode.
    A model holding the resulting `kt.HubLayer`, once saved, reloads with
    `keras.models.load_model(path, safe_mode=False)` only: the default,
    `safe_mode=True`, refuses anything that would run code from the file
    (`Lambda` bytecode, a SavedModel).

    Returns:
        A built `keras.Model`.

    Example:

    >>> import keras_transfer as kt
    >>> backbone = kt.load_backbone("MobileNetV2", weights=None, input_shape=(32, 32, 3))
    >>> backbone.name
    'mobilenetv2_1.00_32'
    """
    if isinstance(spec, keras.Model):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(
            "`spec` must be a preset name, handle or folder, or a Keras model; "
            f"got {type(spec).__name__}."
        )
    spec = os.fspath(spec)
    if spec in ZOO_NAMES:
        return _from_keras_hub(_zoo_preset(spec), spec, **kwargs)
    if spec.startswith("keras_cv:"):
        return _from_keras_cv(spec.removeprefix("keras_cv:"), **kwargs)
    # Names first: a folder that happens to share a name never replaces it.
    application = _keras_application(spec)
    if application is not None:
        return _from_application(application, spec, **kwargs)
    if not _is_kerashub_preset_name(spec) and _is_saved_model(spec):
        return _from_saved_model(spec, **kwargs)
    return _from_keras_hub(spec, spec, **kwargs)


def load_preprocessor(spec, **kwargs):
    """Loads the preprocessor (tokenizer, image converter) that goes with a
    KerasHub or zoo backbone.

    It is KerasHub's `TextClassifierPreprocessor` or
    `ImageClassifierPreprocessor` for the preset's backbone class.

    Args:
        spec: a zoo name or a KerasHub preset, as for `kt.load_backbone`.
        **kwargs: passed to `from_preset` (e.g. `sequence_length=64`).

    Example:

    >>> import keras_transfer as kt
    >>> preprocessor = kt.load_preprocessor("minilm_l6", sequence_length=16)  # doctest: +SKIP
    >>> preprocessor(["a fine film"])["token_ids"].shape  # doctest: +SKIP
    TensorShape([1, 16])
    """
    import keras_hub

    preset = _zoo_preset(spec) if spec in ZOO_NAMES else os.fspath(spec)
    errors = []
    for task in _PREPROCESSOR_TASKS:
        try:
            return getattr(keras_hub.models, task).from_preset(preset, **kwargs)
        except ValueError as error:
            errors.append(str(error).splitlines()[0])
        except Exception as error:  # Network and file errors alike.
            raise _unavailable(spec, error) from error
    raise ValueError(f"Found no text or image preprocessor for {spec!r}: {' / '.join(errors)}")


def _zoo_preset(name: str) -> str:
    from keras_transfer import zoo

    return getattr(zoo, name)()


def _from_keras_hub(preset: str, spec: str, **kwargs) -> keras.Model:
    import keras_hub

    try:
        return keras_hub.models.Backbone.from_preset(preset, **kwargs)
    except Exception as error:  # Network and file errors alike.
        raise _unavailable(spec, error) from error


def _from_keras_cv(preset: str, **kwargs) -> keras.Model:
    keras_cv = import_keras_cv()
    try:
        return keras_cv.models.Backbone.from_preset(preset, **kwargs)
    except Exception as error:  # Network and file errors alike.
        raise _unavailable(f"keras_cv:{preset}", error) from error


def _keras_application(name: str):
    by_lower_name = {n.lower(): n for n in dir(keras.applications) if n[:1].isupper()}
    attribute = by_lower_name.get(name.lower())
    return getattr(keras.applications, attribute) if attribute else None


def _from_application(constructor, name: str, **kwargs) -> keras.Model:
    kwargs.setdefault("include_top", False)
    kwargs.setdefault("weights", "imagenet")
    try:
        return constructor(**kwargs)
    except Exception as error:  # Turned into a clearer error below if offline.
        if kwargs["weights"] == "imagenet" and _looks_like_network_error(error):
            raise ValueError(
                f"Could not download the ImageNet weights of {name!r} ({_first_line(error)}). "
                "Without internet, pass `weights=<path to a .weights.h5 file>` or "
                "`weights=None`."
            ) from error
        raise


def _is_kerashub_preset_name(spec: str) -> bool:
    if os.sep in spec or "/" in spec:
        return False  # A path or a handle, never a built-in name.
    import keras_hub

    return spec in keras_hub.models.Backbone.presets


def _is_saved_model(spec: str) -> bool:
    if is_url(spec):
        return True
    return os.path.isfile(os.path.join(spec, "saved_model.pb"))


def _from_saved_model(handle: str, input_shape=None, input_dtype="float32", **kwargs):
    if input_shape is None:
        raise ValueError(
            f"{handle!r} is a TF SavedModel, whose input shape Keras cannot read. "
            "Pass `input_shape=` (without the batch dimension, e.g. `()` for "
            "strings, `(224, 224, 3)` for images) and `input_dtype=`."
        )
    kwargs.setdefault("trainable", True)
    inputs = keras.Input(shape=tuple(input_shape), dtype=input_dtype)
    outputs = HubLayer(handle, **kwargs)(inputs)
    return keras.Model(inputs, outputs, name="hub_backbone")


def _unavailable(spec, error: Exception) -> Exception:
    message = _first_line(error)
    if os.path.isdir(str(spec)):
        return ValueError(
            f"The folder {spec!r} could not be loaded as a KerasHub preset, a Hugging "
            f"Face checkpoint or a TF SavedModel: {message}"
        )
    return ValueError(
        f"The backbone {spec!r} could not be fetched ({message}). Without internet, "
        "load it where there is some and save it "
        "(`keras_hub.models.Backbone.from_preset(name).save_to_preset(folder)`), "
        "then pass the local folder: `kt.load_backbone('/path/to/folder')`."
    )


def _looks_like_network_error(error: Exception) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return any(word in text for word in ("url", "connection", "resolve", "network", "http"))


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"
