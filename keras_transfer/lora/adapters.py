"""`kt.save_adapters` / `kt.load_adapters`: what fine-tuning changed, in a
small file, keyed by variable path and tied to the base weights it needs."""

from __future__ import annotations

import io
import json
import os

import keras
import numpy as np

from keras_transfer._keras_internals.layers import flatten_layers, own_weights
from keras_transfer._keras_internals.training import sync_jax_state
from keras_transfer.groups import layer_groups
from keras_transfer.groups.layer_variables import has_lora, lora_factors
from keras_transfer.lora._fingerprint import base_entries, fingerprint, to_numpy
from keras_transfer.lora._lora_layers import (
    layer_path,
    lora_capable,
    lora_layers,
    retrace,
    train_lora,
    unique_layers,
)

_FORMAT = "keras_transfer.adapters/1"
_MANIFEST = "manifest"


def save_adapters(model: keras.Model, path: str | os.PathLike) -> None:
    """Saves what LoRA fine-tuning changed, apart from the backbone.

    The file (a NumPy `.npz` archive with a JSON manifest, loaded without
    pickle) holds the LoRA factors, every variable that is trainable at
    save time (the head, and any group trained in full) together with the
    other weights of those layers (a trained BatchNormalization's
    statistics), each keyed by its variable path, and the rank and alpha of
    each LoRA layer. The rest of the model is the base: the file records each
    base variable's path, shape and SHA-256, so `kt.load_adapters` refuses any
    other base, naming the first variable that differs. Save with the
    trainable set you trained with (after `fit`, before `kt.merge_lora`).

    Args:
        model: a model with LoRA enabled.
        path: the file to write (by convention ending in `.npz`); written
            whole or not at all.

    Example:

    >>> import os, tempfile
    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([
    ...     keras.Input((16,)),
    ...     keras.layers.Dense(16, name="body"),
    ...     keras.layers.Dense(2, name="head"),
    ... ])
    >>> _ = kt.enable_lora(model, rank=2)
    >>> path = os.path.join(tempfile.mkdtemp(), "task.npz")
    >>> kt.save_adapters(model, path)
    >>> kt.load_adapters(model, path)  # Onto this model, or a fresh one.
    """
    sync_jax_state(model)
    layers = lora_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no layer with LoRA enabled, so it has no adapters "
            "to save. Call `kt.enable_lora(model)` before training, or save the whole "
            "model with `model.save(...)`."
        )
    _unique_paths(model.weights, model.name)
    saved = _adapter_variables(model)
    saved_ids = {id(v) for v in saved}
    base = [v for v in model.weights if id(v) not in saved_ids]
    factor_ids = {id(v) for v in lora_factors(model)}
    entries = base_entries(base)
    manifest = {
        "format": _FORMAT,
        "keras_version": keras.__version__,
        "lora_layers": [_layer_entry(layer) for layer in layers],
        "variables": [
            {"path": v.path, "shape": list(v.shape), "factor": id(v) in factor_ids} for v in saved
        ],
        "base_fingerprint": fingerprint(entries),
        "base": entries,
    }
    arrays = {f"v{index}": to_numpy(v) for index, v in enumerate(saved)}
    arrays[_MANIFEST] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    _write_atomically(os.fspath(path), arrays)


def load_adapters(model: keras.Model, path: str | os.PathLike) -> None:
    """Loads adapters saved by `kt.save_adapters` into a model of the same base.

    The model is the backbone (and head architecture) the adapters were
    trained on, freshly loaded (from the same preset) or in memory with
    other adapters loaded: several adapters can be loaded in turn onto one
    base to switch tasks. LoRA is enabled with the saved rank and alpha on
    the saved layers where it is not yet (then, as after `kt.enable_lora`,
    the factors and the head train); where it is, the rank must agree.

    Everything is checked before anything is assigned: the LoRA layers and
    saved variables must exist under the same paths with the same shapes,
    the model must have no LoRA layer the file lacks, and every other
    variable must be the base the adapters were trained on (same path, shape
    and values). A mismatch is an error naming the first path that differs;
    nothing is ever loaded into another layer.

    Args:
        model: the model to load into, built. Its variable paths must be the
            saved ones: name your layers and models (paths include the names
            of nesting Sequential models and of KerasHub layers).
        path: a file written by `kt.save_adapters`.

    Example:

    >>> import os, tempfile
    >>> import keras
    >>> import keras_transfer as kt
    >>> def build():  # Variable paths include a Sequential's name: give one.
    ...     return keras.Sequential([
    ...         keras.Input((16,)),
    ...         keras.layers.Dense(16, name="body", kernel_initializer="ones"),
    ...         keras.layers.Dense(2, name="head"),
    ...     ], name="classifier")
    >>> trained = build()
    >>> _ = kt.enable_lora(trained, rank=2)
    >>> path = os.path.join(tempfile.mkdtemp(), "task.npz")
    >>> kt.save_adapters(trained, path)
    >>> fresh = build()  # The same base weights (here: all ones), a new head.
    >>> kt.load_adapters(fresh, path)
    >>> fresh.get_layer("body").lora_rank
    2
    """
    manifest, arrays = _read(os.fspath(path))
    sync_jax_state(model)
    to_enable = _check_lora_layers(model, manifest)
    _check_variables(model, manifest, to_enable)
    for layer, entry in to_enable:
        layer.enable_lora(entry["rank"], lora_alpha=entry["alpha"])
    layers_by_path = {layer_path(layer): layer for layer in lora_layers(model)}
    for entry in manifest["lora_layers"]:
        layers_by_path[entry["path"]].lora_alpha = entry["alpha"]
    weights = {v.path: v for v in model.weights}
    for index, entry in enumerate(manifest["variables"]):
        variable = weights[entry["path"]]
        variable.assign(arrays[f"v{index}"])
    if to_enable:
        train_lora(model, layer_groups(model))
        retrace(model)


def _adapter_variables(model) -> list:
    """The LoRA factors, the trainable weights, and every weight of a layer
    (without LoRA) that trains, in the order of `model.weights`."""
    trainable = {id(v) for v in model.trainable_weights}
    chosen = trainable | {id(v) for v in lora_factors(model)}
    for layer in unique_layers(flatten_layers(model)):
        own = own_weights(layer)
        if not has_lora(layer) and any(id(v) in trainable for v in own):
            chosen.update(id(v) for v in own)
    return [v for v in model.weights if id(v) in chosen]


def _layer_entry(layer) -> dict:
    return {
        "path": layer_path(layer),
        "class": type(layer).__name__,
        "rank": int(layer.lora_rank),
        "alpha": layer.lora_alpha,
    }


def _unique_paths(variables, model_name: str) -> dict:
    by_path: dict = {}
    for variable in variables:
        if variable.path in by_path and by_path[variable.path] is not variable:
            raise ValueError(
                f"Two variables of model '{model_name}' share the path '{variable.path}', "
                "so adapters keyed by path could not tell them apart. Give the layers "
                "unique names."
            )
        by_path[variable.path] = variable
    return by_path


def _check_lora_layers(model, manifest) -> list:
    """The `(layer, entry)` pairs that still need LoRA; raises on a mismatch."""
    capable = {}
    for layer in unique_layers(flatten_layers(model)):
        if lora_capable(layer):
            capable.setdefault(layer_path(layer), layer)
    to_enable = []
    for entry in manifest["lora_layers"]:
        layer = capable.get(entry["path"])
        if layer is None or type(layer).__name__ != entry["class"]:
            found = f"a {type(layer).__name__}" if layer is not None else "no such layer"
            raise ValueError(
                f"The adapters have LoRA on the {entry['class']} '{entry['path']}', but "
                f"model '{model.name}' has {found} there (another architecture, or a "
                "renamed layer). Load them into the model they were trained on."
            )
        if not has_lora(layer):
            to_enable.append((layer, entry))
        elif int(layer.lora_rank) != entry["rank"]:
            raise ValueError(
                f"Layer '{entry['path']}' has LoRA of rank {layer.lora_rank}, the adapters "
                f"rank {entry['rank']}. Load them into a model without LoRA on it, which "
                "gets their rank."
            )
    expected = {entry["path"] for entry in manifest["lora_layers"]}
    extra = [layer_path(layer) for layer in lora_layers(model) if layer_path(layer) not in expected]
    if extra:
        raise ValueError(
            f"Model '{model.name}' has LoRA on '{extra[0]}', which the adapters do not "
            "have, so their outputs could not be reproduced. Load them into a model "
            "without that LoRA (a freshly loaded base)."
        )
    return to_enable


def _check_variables(model, manifest, to_enable) -> None:
    """Checks the saved variables and the base, before anything is assigned."""
    weights = _unique_paths(model.weights, model.name)
    pending = {f"{entry['path']}/" for _, entry in to_enable}
    for entry in manifest["variables"]:
        if entry["factor"] and any(entry["path"].startswith(prefix) for prefix in pending):
            continue  # Created by `enable_lora`, with the rank that sets its shape.
        _check_one(weights.get(entry["path"]), entry["path"], entry["shape"], "a saved")
    saved = {entry["path"] for entry in manifest["variables"]}
    factors = {id(v) for v in lora_factors(model)}
    base = {v.path: v for v in model.weights if v.path not in saved and id(v) not in factors}
    for path, shape, _ in manifest["base"]:
        _check_one(base.get(path), path, shape, "a base")
    expected = {entry[0] for entry in manifest["base"]}
    extra = [path for path in base if path not in expected]
    if extra:
        raise ValueError(
            f"Model '{model.name}' has a variable '{extra[0]}' that the adapters' base did "
            "not have (another architecture, or a renamed layer). Load them into the model "
            "they were trained on."
        )
    current = {entry[0]: entry[2] for entry in base_entries(base.values())}
    for path, _, digest in manifest["base"]:
        if current[path] != digest:
            raise ValueError(
                f"The base variable '{path}' holds other values than the base the adapters "
                f"were trained on (base fingerprint {manifest['base_fingerprint'][:12]}...): "
                "load them into the same backbone (the same preset or weights), before "
                "any other change to it."
            )


def _check_one(variable, path: str, shape, kind: str) -> None:
    if variable is None:
        raise ValueError(
            f"The adapters need {kind} variable '{path}', which the model does not have "
            "(another architecture, or a renamed layer). Load them into the model they "
            "were trained on."
        )
    if list(variable.shape) != list(shape):
        raise ValueError(
            f"Variable '{path}' has shape {tuple(variable.shape)} in the model but "
            f"{tuple(shape)} in the adapters: another architecture or head. Load them into "
            "the model they were trained on."
        )


def _read(path: str):
    try:
        archive = np.load(path, allow_pickle=False)
        arrays = {name: archive[name] for name in archive.files}
        manifest = json.loads(bytes(arrays.pop(_MANIFEST)).decode())
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"{path!r} is not an adapters file written by `kt.save_adapters` ({error})."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise ValueError(
            f"{path!r} is not an adapters file of format {_FORMAT!r} (`kt.save_adapters`)."
        )
    return manifest, arrays


def _write_atomically(path: str, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    partial = path + ".partial"
    with open(partial, "wb") as file:
        file.write(buffer.getvalue())
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
