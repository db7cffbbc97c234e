"""`HubLayer`: a TensorFlow SavedModel (TF-Hub's TF2 format) as a Keras 3 layer."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Sequence

import keras

from keras_transfer.groups.layer_groups import split_by_patterns

# Scope components that name one block of a network, searched from the left
# in a variable's name (`encoder/layer_3/attention/kernel` -> `encoder/layer_3`).
_BLOCK_COMPONENT = re.compile(
    r"^(?:(?:transformer|encoder|decoder)_)?layers?_?\d+$"  # layer_3, transformer_layer_0
    r"|^(?:block|stage|stack)s?_?\d+"  # block_2, blocks_0, stage2, block2a_expand -> block2
    r"|^conv\d+(?=_block)"  # Keras ResNet's conv3_block2_1_conv -> conv3
)
_URL_PREFIXES = ("http://", "https://")
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
            (downloaded by `tensorflow_hub.resolve`, which needs
            `pip install tensorflow-hub` and the internet). Saved in the
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
        loaded = tf.saved_model.load(_resolve_handle(handle))
        function = _function_of(loaded, signature, handle)
        losses = list(getattr(loaded, "regularization_losses", None) or [])
        saved = _saved_variables(loaded, [function, *losses])
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = _float_dtype(variable for variable, _ in saved)
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
        self._accepts_training = signature is None and _accepts_training(function)
        self._saved_names = self._track_saved_variables(saved)
        self._build_at_init()
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
        trainable = {id(variable) for variable in self._trainable_variables}
        if self.group_patterns is not None:
            return _groups_from_patterns(named, self.group_patterns, self.name)
        return _groups_from_names(named, trainable)

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
        if _in_safe_mode():
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
                self._track_variable(wrapped)
                names[wrapped.path] = saved_name
        return names

    def _fine_tuning(self) -> bool:
        """Whether any SavedModel variable is being trained (training mode)."""
        return self.trainable and any(v.trainable for v in self._trainable_variables)

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


def _resolve_handle(handle: str) -> str:
    """A local path for `handle`: itself, or the download of a URL."""
    if not handle.startswith(_URL_PREFIXES):
        import tensorflow as tf

        if not tf.io.gfile.isdir(handle):
            raise FileNotFoundError(
                f"No SavedModel folder at {handle!r}. `handle` must be a folder written "
                "by `tf.saved_model.save` (holding `saved_model.pb`), or a tfhub.dev / "
                "Kaggle Models URL."
            )
        return handle
    try:
        import tensorflow_hub
    except ModuleNotFoundError as error:
        if error.name != "tensorflow_hub":
            raise ImportError(
                f"{handle!r} is a URL, but tensorflow_hub fails to import ({error}); under "
                "Keras 3, tensorflow-hub 0.16 also needs `tf-keras` and setuptools' "
                "`pkg_resources` (`setuptools<81`). Or download the SavedModel yourself "
                "and pass its local folder."
            ) from error
        raise ImportError(
            f"{handle!r} is a URL: fetching it needs TensorFlow Hub (`pip install "
            "tensorflow-hub`). Or download the SavedModel yourself and pass its local folder."
        ) from None
    try:
        return tensorflow_hub.resolve(handle)
    except Exception as error:  # Network, HTTP and archive errors alike.
        raise OSError(
            f"Could not fetch {handle!r} ({type(error).__name__}: {error}). Download it "
            "and pass the local folder as `handle`."
        ) from error


def _function_of(loaded, signature: str | None, handle: str):
    signatures = sorted(getattr(loaded, "signatures", {}) or {})
    if signature is not None:
        if signature not in signatures:
            raise ValueError(
                f"The SavedModel {handle!r} has no signature {signature!r}; "
                f"its signatures are {signatures}."
            )
        return loaded.signatures[signature]
    if not callable(loaded):
        raise ValueError(
            f"The SavedModel {handle!r} has no `__call__` function: pass `signature=` "
            f"one of {signatures}, with `output_key` or `signature_outputs_as_dict=True`."
        )
    return loaded.__call__


def _accepts_training(function) -> bool:
    try:
        return "training" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _saved_variables(loaded, functions) -> list[tuple]:
    """`(tf.Variable, trainable)` pairs for the variables `functions` read.

    Ordered as the functions first read them. Trainability follows TF-Hub's
    `trainable_variables` attribute when the SavedModel has one.
    """
    seen, variables = set(), []
    for function in functions:
        concrete = getattr(function, "concrete_functions", None) or [function]
        for concrete_function in concrete:
            for variable in concrete_function.variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    variables.append(variable)
    declared = getattr(loaded, "trainable_variables", None)
    if declared is None:
        return [(variable, variable.trainable) for variable in variables]
    trainable = {id(variable) for variable in declared}
    return [(variable, id(variable) in trainable) for variable in variables]


def _float_dtype(variables) -> str:
    for variable in variables:
        if variable.dtype.is_floating:
            return variable.dtype.name
    return "float32"


def _unique(name: str, used: set) -> str:
    candidate, index = name, 1
    while candidate in used:
        candidate, index = f"{name}_{index}", index + 1
    used.add(candidate)
    return candidate


def _block_key(saved_name: str) -> str | None:
    """The block of a variable: its name up to the first block-like scope."""
    scopes = saved_name.split("/")[:-1]
    for index, scope in enumerate(scopes):
        match = _BLOCK_COMPONENT.search(scope)
        if match:
            return "/".join([*scopes[:index], match.group(0)])
    return None


def _groups_from_names(named, trainable: set) -> list[tuple[str, list]]:
    """Blocks by name; each run of variables outside blocks is a group too."""
    groups: list[tuple[str | None, list]] = []
    index_of: dict[str, int] = {}
    for saved_name, variable in named:
        key = _block_key(saved_name)
        if key is None:
            if groups and groups[-1][0] is None:
                groups[-1][1].append((saved_name, variable))
            else:
                groups.append((None, [(saved_name, variable)]))
        elif key in index_of:
            groups[index_of[key]][1].append((saved_name, variable))
        else:
            index_of[key] = len(groups)
            groups.append((key, [(saved_name, variable)]))
    if not index_of:
        return []
    named_groups = [(key or _common_scope(members), members) for key, members in groups]
    return _merge_untrainable([(n, [v for _, v in m]) for n, m in named_groups], trainable)


def _common_scope(members) -> str:
    scopes = [name.split("/")[:-1] for name, _ in members]
    common = os.path.commonprefix(scopes)
    return "/".join(common) if common else members[0][0]


def _merge_untrainable(groups, trainable: set) -> list[tuple[str, list]]:
    """Folds groups with nothing to train (a lone moving statistic) into a
    neighbour, so that no group is frozen or unfrozen to no effect."""
    merged: list[tuple[str, list]] = []
    pending: list = []
    for name, variables in groups:
        if not any(id(variable) in trainable for variable in variables):
            (merged[-1][1] if merged else pending).extend(variables)
            continue
        merged.append((name, pending + variables))
        pending = []
    return merged


def _groups_from_patterns(named, patterns, layer_name: str) -> list[tuple[str, list]]:
    what = f"SavedModel variables of kt.HubLayer '{layer_name}'"
    return list(zip(patterns, split_by_patterns(named, patterns, what)))


def _in_safe_mode() -> bool:
    """Whether Keras is deserializing in safe mode (`load_model`'s default)."""
    # Keras has no public reader of its safe-mode scope; `keras.layers.TFSMLayer`
    # and `Lambda` read the same flag. Outside any scope (`clone_model`, a direct
    # `from_config`), the caller named the handle in code, so loading is allowed.
    from keras.src.saving import serialization_lib

    return serialization_lib.in_safe_mode() is True
