"""`HubLayer`: a TensorFlow SavedModel (TF-Hub's TF2 format) as a Keras 3 layer.

The layer only: handles are resolved in `hub_handles`, the loaded SavedModel
is read in `saved_model_inspection` and split into blocks in `hub_grouping`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import keras

from keras_transfer._keras_internals.layers import (
    build_at_init,
    track_variable,
    trainable_capable_variables,
)
from keras_transfer._keras_internals.saving import in_safe_mode
from keras_transfer.backbones.hub_grouping import groups_from_names, groups_from_patterns
from keras_transfer.backbones.hub_handles import resolve_handle
from keras_transfer.backbones.saved_model_inspection import (
    accepts_training,
    float_dtype,
    function_of,
    saved_variables,
)

_SECURITY_GUIDANCE = "https://github.com/tensorflow/tensorflow/blob/master/SECURITY.md"


@keras.saving.register_keras_serializable(package="keras_transfer")
class HubLayer(keras.layers.Layer):
    """Wraps a TensorFlow SavedModel as a Keras 3 layer, for fine-tuning.

    What `hub.KerasLayer` is for Keras 2, for Keras 3 models (`hub.KerasLayer`
    fails inside them): it calls a reusable SavedModel (TF-Hub's TF2 format, or
    any `tf.saved_model.save` output) in a Sequential or Functional model. The
    variables its function reads become the layer's weights, trainable when
    the layer is; the optimizer updates those very `tf.Variable`s, so
    fine-tuning changes what the SavedModel computes. `training` reaches a
    SavedModel whose `__call__` accepts it, and its `regularization_losses`
    reach `model.losses` while the layer is trainable. The SavedModel has one
    training flag: it runs in training mode (dropout, moving statistics) while
    any of its variables trains, so a frozen block's moving statistics update
    whenever another block inside it is being fine-tuned.

    The layer splits its variables into blocks by their names (`encoder/layer_3/
    ...`, `block_2/...`, `transformer_layer_0/...`), or by `group_patterns`, so
    `kt.layer_groups`, `kt.FreezeSchedule` and `kt.DiscriminativeLR` reach
    inside it. It runs on the TensorFlow backend only, without XLA (a SavedModel
    may hold ops XLA cannot compile; set `layer.supports_jit = True` to try).
    Dtypes are those the SavedModel was saved with: mixed precision does not
    reach inside it.

    Security: a SavedModel is a program, not data. TensorFlow's security
    guidance ("Using TensorFlow securely",
    https://github.com/tensorflow/tensorflow/blob/master/SECURITY.md) says that
    running an untrusted model is equivalent to running untrusted code, and to
    run untrusted SavedModels only in a sandbox. `HubLayer` loads only the
    `handle` it is given, never a path it found itself. A model holding it
    saves the handle, not the program; `keras.models.load_model` in safe mode
    (`safe_mode=True`, the default) refuses to reload it, with a message,
    before anything is loaded. Pass `safe_mode=False` (or call
    `keras.config.enable_unsafe_deserialization()`) only for models and
    SavedModels you trust. `HubLayer.from_config` outside any loading (in
    `keras.models.clone_model`, say) loads the handle: there, your code
    named it.

    Args:
        handle: a local SavedModel folder, or a tfhub.dev / Kaggle Models URL
            (or any URL serving TF-Hub's compressed format), downloaded once
            into `$TFHUB_CACHE_DIR` by `tensorflow_hub.resolve`: that needs
            `pip install 'keras-transfer[hub]'` and the internet. Saved in the
            model's config, so the model reloads from it.
        trainable: whether the SavedModel's trainable variables are trained.
            Defaults to `False`, as in `hub.KerasLayer`.
        signature: optional name of a signature (e.g. `"serving_default"`) to
            call instead of the SavedModel's `__call__`. Signatures take
            keyword inputs (pass a dict, or one tensor for a one-input
            signature), return a dict and run in inference mode.
        signature_outputs_as_dict: with `signature`, return the whole dict of
            outputs.
        output_key: the output to return when the SavedModel returns a dict.
            With `signature`, exactly one of `output_key` and
            `signature_outputs_as_dict` must be given.
        arguments: optional dict of extra keyword arguments for the call
            (JSON-serializable, to be saved with the model).
        group_patterns: optional list of regular expressions, one per block and
            ordered from input to output; each variable joins the first
            pattern it matches (`re.search` on its SavedModel name, e.g.
            `"encoder/layer_0/kernel"`). Defaults to blocks found by name.
        **kwargs: `name`, `dtype` and other `keras.layers.Layer` arguments.

    Example:

    >>> import keras, pytest
    >>> if keras.config.backend() != "tensorflow":
    ...     pytest.skip("kt.HubLayer needs the TensorFlow backend")
    >>> import tempfile
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> from keras_transfer.backbones import HubLayer
    >>> class Scale(tf.Module):
    ...     def __init__(self):
    ...         self.kernel = tf.Variable([[2.0]], name="kernel")
    ...     @tf.function(input_signature=[tf.TensorSpec([None, 1])])
    ...     def __call__(self, inputs):
    ...         return inputs @ self.kernel
    >>> path = tempfile.mkdtemp()
    >>> tf.saved_model.save(Scale(), path)
    >>> model = keras.Sequential([keras.Input((1,)), HubLayer(path, trainable=True)])
    >>> model.predict(np.ones((1, 1)), verbose=0)
    array([[2.]], dtype=float32)
    >>> len(model.trainable_weights)
    1
    """

    def __init__(
        self,
        handle: str | os.PathLike,
        trainable: bool = False,
        signature: str | None = None,
        signature_outputs_as_dict: bool | None = None,
        output_key: str | None = None,
        arguments: dict | None = None,
        group_patterns: Sequence[str] | None = None,
        **kwargs,
    ):
        _require_tensorflow_backend()
        import tensorflow as tf

        handle = os.fspath(handle)
        _check_output_arguments(signature, signature_outputs_as_dict, output_key)
        path = resolve_handle(handle)
        # Loaded variables take the name scope around them (Keras 3.16 deserializes
        # a Sequential's layers inside its scope): names as saved, from the root.
        with tf.name_scope(""):
            loaded = tf.saved_model.load(path)
        function = function_of(loaded, signature, handle)
        losses = list(getattr(loaded, "regularization_losses", None) or [])
        saved = saved_variables(loaded, [function, *losses])
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = float_dtype(variable for variable, _ in saved)
        super().__init__(trainable=trainable, **kwargs)
        self.handle = handle
        self.signature = signature
        self.signature_outputs_as_dict = signature_outputs_as_dict
        self.output_key = output_key
        self.arguments = dict(arguments or {})
        self.group_patterns = tuple(group_patterns) if group_patterns is not None else None
        self.supports_jit = False  # A SavedModel may hold ops XLA cannot compile.
        self._saved_model = loaded
        self._function = function
        self._regularization_losses = tuple(losses)
        self._accepts_training = signature is None and accepts_training(function)
        self._saved_names = self._track_saved_variables(saved)
        build_at_init(self)
        self.variable_groups()  # Fails early on `group_patterns` that do not fit.

    @property
    def resolved_object(self):
        """The object `tf.saved_model.load` returned for `handle`."""
        return self._saved_model

    @property
    def saved_variable_names(self) -> dict[str, str]:
        """The SavedModel name of each weight (`"encoder/layer_0/kernel"`), keyed
        by the weight's Keras path, in the order the SavedModel reads them."""
        return dict(self._saved_names)

    def call(self, inputs, training=None):
        kwargs = dict(self.arguments)
        if self._accepts_training:
            kwargs["training"] = bool(training) and self._fine_tuning()
        if self.signature is None:
            outputs = self._function(inputs, **kwargs)
        else:
            outputs = self._function(**self._signature_inputs(inputs), **kwargs)
        if self.trainable:
            for loss in self._regularization_losses:
                self.add_loss(loss())
        return self._select_output(outputs)

    def variable_groups(self) -> list[tuple[str, list]]:
        """The SavedModel's blocks as `(name, variables)` pairs, input to output.

        `kt.layer_groups` splits the layer into these groups. Blocks come from
        `group_patterns`, or else from block-like scopes in the variable names
        (`layer_3`, `block_2`, `stage_1`, `transformer_layer_0`, ...); the
        variables around them (embeddings, pooler) form groups of their own,
        and variables with nothing to train join the group before them.
        """
        by_path = {variable.path: variable for variable in self.weights}
        named = [(name, by_path[path]) for path, name in self._saved_names.items()]
        trainable = {id(variable) for variable in trainable_capable_variables(self)}
        if self.group_patterns is not None:
            return groups_from_patterns(named, self.group_patterns, self.name)
        return groups_from_names(named, trainable)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "handle": self.handle,
                "signature": self.signature,
                "signature_outputs_as_dict": self.signature_outputs_as_dict,
                "output_key": self.output_key,
                "arguments": dict(self.arguments) or None,
                "group_patterns": list(self.group_patterns) if self.group_patterns else None,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict):
        if in_safe_mode():
            raise ValueError(
                f"Refusing to load the SavedModel {config.get('handle')!r} of kt.HubLayer "
                f"'{config.get('name')}' in safe mode. A SavedModel is a program, not data: "
                "loading it runs the TensorFlow graphs inside it, so TensorFlow advises "
                f"running untrusted ones only in a sandbox ({_SECURITY_GUIDANCE}). If you "
                "trust that path, pass `safe_mode=False` to `keras.models.load_model`, or "
                "call `keras.config.enable_unsafe_deserialization()`."
            )
        return super().from_config(config)

    def _track_saved_variables(self, saved) -> dict:
        """Tracks each SavedModel variable as a Keras variable backed by it.

        Returns the SavedModel names by Keras path, in the order the function
        first reads them (input to output).
        """
        names, used = {}, set()
        with keras.name_scope(self.name, caller=self):
            for variable, trainable in saved:
                saved_name = re.sub(r":\d+$", "", variable.name)
                keras_name = _unique(saved_name.replace("/", "_"), used)
                # A Keras variable built on a `tf.Variable` holds that very
                # variable: the optimizer updates what the SavedModel reads.
                wrapped = keras.Variable(
                    initializer=variable,
                    dtype=variable.dtype.name,
                    trainable=trainable,
                    autocast=False,
                    name=keras_name,
                )
                track_variable(self, wrapped)
                names[wrapped.path] = saved_name
        return names

    def _fine_tuning(self) -> bool:
        """Whether any SavedModel variable is being trained (training mode)."""
        return self.trainable and any(v.trainable for v in trainable_capable_variables(self))

    def _signature_inputs(self, inputs) -> dict:
        if isinstance(inputs, dict):
            return inputs
        names = list(self._function.structured_input_signature[1])
        if len(names) != 1:
            raise ValueError(
                f"Signature {self.signature!r} of {self.handle!r} takes the inputs "
                f"{names}: pass them as a dict keyed by these names."
            )
        return {names[0]: inputs}

    def _select_output(self, outputs):
        if self.output_key is None:
            return outputs
        if not isinstance(outputs, dict):
            raise ValueError(
                f"`output_key={self.output_key!r}` needs a SavedModel that returns a dict, "
                f"but {self.handle!r} returns {type(outputs).__name__}."
            )
        if self.output_key not in outputs:
            raise ValueError(
                f"The SavedModel {self.handle!r} has no output {self.output_key!r}; "
                f"its outputs are {sorted(outputs)}."
            )
        return outputs[self.output_key]


def _require_tensorflow_backend() -> None:
    backend = keras.config.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "kt.HubLayer needs the TensorFlow backend: a SavedModel is a TensorFlow "
            f"program, which the {backend!r} backend cannot run. Set the environment "
            "variable KERAS_BACKEND=tensorflow before importing Keras."
        )


def _check_output_arguments(signature, signature_outputs_as_dict, output_key) -> None:
    if signature is None and signature_outputs_as_dict:
        raise ValueError("`signature_outputs_as_dict=True` needs a `signature`.")
    if signature is not None and (output_key is None) == (not signature_outputs_as_dict):
        raise ValueError(
            f"Signature {signature!r} returns a dict: pass either `output_key` (one "
            "output) or `signature_outputs_as_dict=True` (all of them), not both."
        )


def _unique(name: str, used: set) -> str:
    candidate, index = name, 1
    while candidate in used:
        candidate, index = f"{name}_{index}", index + 1
    used.add(candidate)
    return candidate
