import numpy as np
import pytest

from keras_transfer.export.serving_inputs import ImageSpec
from keras_transfer.finetune.data import (
    load_image_folder,
    load_labelled_data,
    load_text_csv,
    read_images,
    split_validation,
)


def write_png(path, array):
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(array).numpy())


def image_folder(root, counts={"cat": 3, "dog": 2}, size=(10, 12)):  # noqa: B006
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        for index in range(count):
            write_png(root / name / f"{index}.png", rng.integers(0, 256, (*size, 3), "uint8"))
    return root


def test_image_folder_gives_sorted_classes_and_labels(tmp_path):
    data = load_image_folder(str(image_folder(tmp_path)))
    assert data.kind == "image"
    assert data.class_names == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1]
    assert data.inputs[3].endswith("dog/0.png")


def test_read_images_resizes_and_scales_like_the_serving_signature(tmp_path):
    import tensorflow as tf

    pixels = np.random.default_rng(1).integers(0, 256, (10, 12, 3), "uint8")
    write_png(tmp_path / "a.png", pixels)
    spec = ImageSpec(4, 6, 3, scale=1 / 255, offset=-0.5)
    (image,) = read_images([str(tmp_path / "a.png")], spec)
    expected = tf.image.resize(pixels[None].astype("float32"), (4, 6))[0].numpy() / 255 - 0.5
    np.testing.assert_allclose(image, expected, atol=1e-6)


def test_images_of_mixed_sizes_and_channels_become_one_rgb_batch(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (9, 5, 1), "uint8")
    rgba = rng.integers(0, 256, (20, 30, 4), "uint8")
    write_png(tmp_path / "gray.png", gray)
    write_png(tmp_path / "rgba.png", rgba)
    (tmp_path / "rgb.jpg").write_bytes(
        tf.io.encode_jpeg(rng.integers(0, 256, (7, 7, 3), "uint8")).numpy()
    )
    spec = ImageSpec(4, 6, 3, scale=1 / 255, offset=0.0)
    paths = [str(tmp_path / name) for name in ("gray.png", "rgba.png", "rgb.jpg")]
    images = read_images(paths, spec)
    assert images.shape == (3, 4, 6, 3) and np.isfinite(images).all()
    # Gray is repeated into three equal channels; alpha is dropped.
    np.testing.assert_allclose(images[0][..., 0], images[0][..., 2])
    expected = tf.image.resize(rgba[None, ..., :3].astype("float32"), (4, 6))[0] / 255
    np.testing.assert_allclose(images[1], expected.numpy(), atol=1e-6)


def test_unreadable_image_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Cannot read image .*broken.png"):
        read_images([str(tmp_path / "broken.png")], ImageSpec(4, 4, 3))


def test_csv_gives_texts_and_label_indices(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('text,label\n"great, really",pos\nawful,neg\nfine,pos\n')
    data = load_text_csv(str(path))
    assert data.kind == "text"
    assert data.class_names == ["neg", "pos"]
    assert data.inputs.tolist() == ["great, really", "awful", "fine"]
    assert data.labels.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda p: p / "nowhere", FileNotFoundError, "does not exist"),
        (lambda p: image_folder(p, {"cat": 2}), ValueError, "only \\['cat'\\]"),
        (lambda p: _write(p / "a.csv", "sentence,label\nhi,a\n"), ValueError, "needs \\['text'\\]"),
        (lambda p: _write(p / "a.csv", "text,label\nhi,a\nho,a\n"), ValueError, "at least 2"),
        (lambda p: _write(p / "a.txt", "hello"), ValueError, "neither a folder"),
        (lambda p: _write(p / "a.csv", "text,label\n"), ValueError, "no labelled examples"),
        (
            lambda p: _write(p / "a.csv", "text,label\nhi,a\n  ,b\nho,b\n"),
            ValueError,
            "empty `text` on 1 line\\(s\\) \\(3\\)",
        ),
        (
            lambda p: _write(p / "a.csv", "text,label\nhi,a\nho,\nhu,b\nha\n"),
            ValueError,
            "empty `label` on 2 line\\(s\\) \\(3, 5\\)",
        ),
    ],
)
def test_bad_data_is_refused_with_the_reason(tmp_path, make, error, words):
    with pytest.raises(error, match=words):
        load_labelled_data(str(make(tmp_path)))


def _write(path, text):
    path.write_text(text)
    return path


def test_validation_split_is_stratified_and_deterministic():
    labels = np.array([0] * 10 + [1] * 5 + [2])
    train, validation = split_validation(labels, 0.2, seed=3)
    assert sorted(np.bincount(labels[validation], minlength=3).tolist()) == [0, 1, 2]
    assert set(train).isdisjoint(validation) and len(train) + len(validation) == 16
    again = split_validation(labels, 0.2, seed=3)
    assert np.array_equal(again[1], validation)
    for fraction in (1.5, 0, float("nan"), True, "0.2"):
        with pytest.raises(
            ValueError, match="`validation_fraction` must be a finite number in \\(0, 1\\)"
        ):
            split_validation(labels, fraction, seed=0)
