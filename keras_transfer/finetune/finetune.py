"""`kt.finetune`: the whole transfer recipe, from labelled data to a served model."""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np

from keras_transfer.features import FeatureCache
from keras_transfer.finetune import classifier, report
from keras_transfer.finetune.data import LabelledData, read_images, split_validation
from keras_transfer.freezing import FreezeSchedule
from keras_transfer.lora import enable_lora, merge_lora
from keras_transfer.optimizers import DiscriminativeLR

_TOKENIZE_BATCH = 256


@dataclasses.dataclass
class FinetuneResult:
    """What `kt.finetune` trained and measured.

    Args:
        model: the fine-tuned classifier (its inputs: preprocessed data).
        class_names: the class names, in class-id order.
        head_accuracy: validation accuracy with the frozen backbone and the
            trained head.
        accuracy: validation accuracy after fine-tuning.
        history: per-epoch `loss`, `accuracy`, `val_loss`, `val_accuracy`
            of both phases, head epochs first.
        stages: `(epoch, trainable groups)` of each unfreezing stage, epochs
            counted in `history`.
        seconds: wall-clock seconds of training.
        export_dir: where the SavedModel, metrics and plot went, or `None`.
        prepare: turns raw inputs like `data.inputs` (texts, uint8 images or
            image paths) into `model`'s inputs.
    """

    model: keras.Model
    class_names: list[str]
    head_accuracy: float
    accuracy: float
    history: dict
    stages: list
    seconds: float
    export_dir: str | None = None
    prepare: object = None


def finetune(
    backbone: keras.Model,
    data: LabelledData,
    preprocessor=None,
    export_dir: str | None = None,
    image_size: int | None = None,
    sequence_length: int = 128,
    head_epochs: int = 5,
    epochs: int = 3,
    batch_size: int = 32,
    head_learning_rate: float = 1e-3,
    learning_rate: float = 1e-4,
    decay: float = 2.6,
    validation_fraction: float = 0.2,
    seed: int = 0,
    verbose: int = 1,
    lora_rank: int | None = None,
) -> FinetuneResult:
    """Trains a classifier on a pretrained backbone in two phases, then exports it.

    1. The backbone is frozen and a `Dense` head is trained on its pooled
       features through `kt.FeatureCache` (the backbone runs once).
    2. `kt.FreezeSchedule` unfreezes groups from the top over `epochs`
       epochs, all of them in the last, with `kt.DiscriminativeLR` (each
       group's rate is the one above's divided by `decay`) on AdamW. In each
       stage the frozen groups run once over the data, in inference mode,
       and the stage trains on their cached outputs (`cache_frozen=True`).

    Validation accuracy is measured on a stratified `validation_fraction` of
    the data. With `export_dir`, writes `saved_model/` (raw inputs in:
    strings or uint8 images), `metrics.json` and `training_curves.png`.

    Args:
        backbone: a pretrained backbone, e.g. from `kt.load_backbone`.
        data: a `kt.LabelledData` (also `kt.finetune.LabelledData`): text,
            or images as file paths or a uint8 array; `kt.load_labelled_data`
            reads one from a folder of images or a CSV file.
        preprocessor: the backbone's KerasHub preprocessor (needed for text;
            for images, its image converter's resizing and scaling are used).
        export_dir: optional output folder.
        image_size: images are resized to this square size; defaults to the
            image converter's size, else 224.
        sequence_length: tokens per text. Defaults to 128.
        head_epochs: epochs of phase 1. Defaults to 5.
        epochs: epochs of phase 2. Defaults to 3.
        batch_size: defaults to 32.
        head_learning_rate: Adam's rate in phase 1. Defaults to 1e-3.
        learning_rate: AdamW's rate for the top group in phase 2. Defaults to 1e-4.
        decay: ratio of rates between neighbouring groups. Defaults to 2.6.
        validation_fraction: share of each class held out. Defaults to 0.2.
        seed: seed of the split, initialisation and shuffling. Defaults to 0.
        verbose: 1 shows Keras progress bars, 2 one line an epoch, 0 nothing.
        lora_rank: with a rank, phase 2 trains LoRA factors of that rank
            (`kt.enable_lora`) instead of the backbone's weights, unfreezing
            them from the top the same way; they are merged into the kernels
            (`kt.merge_lora`) before the model is returned and exported.
            Defaults to `None`: full fine-tuning.

    Returns:
        A `kt.FinetuneResult`.
    """
    _check_positive(head_epochs=head_epochs, epochs=epochs, batch_size=batch_size)
    if lora_rank is not None:
        _check_positive(lora_rank=lora_rank)
    if export_dir is not None:
        report.check_can_export()
    keras.utils.set_random_seed(seed)
    prepare, serving_preprocessor, model = _prepare(
        backbone, data, preprocessor, image_size, sequence_length, seed
    )
    inputs = prepare(data.inputs)
    train, validation = split_validation(data.labels, validation_fraction, seed)
    train_data = (_take(inputs, train), data.labels[train])
    validation_data = (_take(inputs, validation), data.labels[validation])
    start = time.perf_counter()
    head_history = _train_head(
        model, train_data, validation_data, head_epochs, batch_size, head_learning_rate, verbose
    )
    # Keras' validation pass already scored the model (dropout off, argmax
    # agreement); predicting again would only trace another function.
    head_accuracy = float(head_history.history["val_accuracy"][-1])
    tune_history, schedule = _fine_tune(
        model,
        train_data,
        validation_data,
        epochs,
        batch_size,
        learning_rate,
        decay,
        verbose,
        lora_rank,
    )
    result = FinetuneResult(
        model=model,
        class_names=list(data.class_names),
        head_accuracy=head_accuracy,
        accuracy=float(tune_history.history["val_accuracy"][-1]),
        history=_joined(head_history.history, tune_history.history),
        stages=[(head_epochs + epoch, groups) for epoch, groups in schedule.items()],
        seconds=time.perf_counter() - start,
        prepare=prepare,
    )
    if export_dir is not None:
        report.write_outputs(result, export_dir, serving_preprocessor)
        result.export_dir = export_dir
    return result


def _check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def _prepare(backbone, data, preprocessor, image_size, sequence_length, seed):
    """(raw inputs -> model inputs, the preprocessor to export with, the classifier)."""
    num_classes = len(data.class_names)
    if data.kind == "text":
        if preprocessor is None:
            raise ValueError(
                "Text needs the backbone's tokenizer: pass `preprocessor=` "
                "(e.g. `kt.load_preprocessor(spec, sequence_length=128)`)."
            )
        model = classifier.text_classifier(backbone, sequence_length, num_classes, seed=seed)
        return (lambda texts: _tokenize(preprocessor, texts, sequence_length)), preprocessor, model
    converter = _image_converter(preprocessor, image_size)
    spec = _image_spec(converter, image_size)
    model = classifier.image_classifier(
        backbone, (spec.height, spec.width, 3), num_classes, seed=seed
    )
    return (lambda images: _images(images, spec)), converter, model


def _tokenize(preprocessor, texts, sequence_length):
    if getattr(preprocessor, "sequence_length", sequence_length) != sequence_length:
        preprocessor.sequence_length = sequence_length
    batches = [
        preprocessor(list(texts[i : i + _TOKENIZE_BATCH]))
        for i in range(0, len(texts), _TOKENIZE_BATCH)
    ]
    return {
        name: np.concatenate([keras.ops.convert_to_numpy(batch[name]) for batch in batches])
        for name in batches[0]
    }


def _image_converter(preprocessor, image_size):
    converter = getattr(preprocessor, "image_converter", None) or preprocessor
    if converter is None or not hasattr(converter, "crop_to_aspect_ratio"):
        return None
    if image_size is not None:
        config = dict(converter.get_config(), image_size=(image_size, image_size))
        converter = type(converter).from_config(config)
    return converter


def _image_spec(converter, image_size):
    from keras_transfer.export.serving_inputs import ImageSpec, image_spec_from_converter

    size = image_size or 224
    if converter is not None:
        return image_spec_from_converter(converter, size, size, 3)
    return ImageSpec(size, size, 3)


def _images(images, spec):
    if isinstance(images, list):
        return read_images(images, spec)
    from keras_transfer.export.serving_inputs import prepare_images

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            "Images must be file paths or a uint8 array (count, height, width, "
            f"channels); got {images.dtype} of shape {images.shape}."
        )
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.concatenate(
        [prepare_images(images[i : i + 256], spec).numpy() for i in range(0, len(images), 256)]
    )


def _take(inputs, indices):
    return keras.tree.map_structure(lambda array: array[indices], inputs)


def _compile(model, optimizer):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _train_head(model, train_data, validation_data, epochs, batch_size, learning_rate, verbose):
    encoder = model.get_layer(classifier.ENCODER_NAME)
    encoder.trainable = False
    _compile(model, keras.optimizers.Adam(learning_rate))
    cache = FeatureCache(model, backbone=encoder, batch_size=batch_size)
    return cache.fit(
        *train_data,
        validation_data=validation_data,
        epochs=epochs,
        batch_size=batch_size,
        verbose=verbose,
    )


def _fine_tune(
    model, train_data, validation_data, epochs, batch_size, lr, decay, verbose, lora_rank
):
    model.get_layer(classifier.ENCODER_NAME).trainable = True
    plan = classifier.groups_that_train(model)
    if lora_rank is not None:
        summary = enable_lora(plan, rank=lora_rank)
        if verbose:
            print(summary)
        plan = classifier.groups_that_train(model)  # Again, to hold the factors.
    optimizer = DiscriminativeLR(keras.optimizers.AdamW(lr, weight_decay=0.01), plan, decay=decay)
    _compile(model, optimizer)
    schedule = classifier.spread_schedule(len(plan), epochs)
    # Each stage's frozen groups run once over the data, not at every step.
    stages = FreezeSchedule(plan, schedule, verbose=int(verbose > 0), cache_frozen=True)
    history = stages.fit(
        *train_data,
        validation_data=validation_data,
        epochs=epochs,
        batch_size=batch_size,
        verbose=verbose,
    )
    if lora_rank is not None:
        merge_lora(model)
    return history, schedule


def _joined(first: dict, second: dict) -> dict:
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    return {key: [float(v) for v in first.get(key, []) + second.get(key, [])] for key in keys}
