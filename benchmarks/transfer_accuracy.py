"""Fine-tuning a pretrained backbone against training the same model from scratch, on real data.

Two experiments, each scored on a fixed held-out test set:

(a) text: MiniLM-L6 (`kt.load_backbone("minilm_l6")`, mean-pooled
    `sequence_output`, `Dense(2)`) on the VADER movie snippets (the Pang & Lee
    sentence-polarity sentences), `kt.datasets.load_vader("movies")` and its
    fixed test split (2,113 sentences):
    - a1 `frozen`: frozen backbone, head trained with `kt.FeatureCache`
      (`--head-epochs`, Adam 1e-3);
    - a2 `fine-tuned`: a1's model, then `--epochs` epochs with
      `kt.FreezeSchedule({0: 2, 1: 5, 2: "all"})` and
      `kt.DiscriminativeLR(AdamW(warm-up + cosine to --text-lr), decay=--text-decay)`
      (BERT's unused pooler merged into the head group);
    - a3 `scratch`: the same architecture (`BertBackbone.from_config`) from
      random initialisation, every layer trained for `--scratch-epochs`
      epochs with AdamW(warm-up + cosine to `--scratch-text-lr`).
    Published anchors on the 10,662 Pang & Lee sentences (10-fold CV): Kim
    (2014) CNN 81.5 %, NBSVM (Wang & Manning 2012) 79.4 %.
(b) images: EfficientNet-Lite0 (`kt.load_backbone("efficientnet_lite0_imagenet")`,
    global average pooling, `Dense(10)`) on the first `--image-train`
    Fashion-MNIST training images, resized to `--image-size` and repeated to 3
    channels, scored on the 10,000 test images; pretrained (frozen head, then
    the same schedule as a2 with `--image-lr`, `--image-decay`) against random
    initialisation (every layer trained, AdamW(`--image-lr`), `--scratch-epochs`
    epochs, BatchNormalization momentum 0.9 so that its statistics catch up).

Models are `Sequential([Input, encoder, Dense])`, with preprocessing, backbone
and pooling in one nested `encoder` model, so that `kt.FeatureCache` can cut
the model after it.

Usage (KERAS_BACKEND selects the backend):

    python benchmarks/transfer_accuracy.py                       # full run
    python benchmarks/transfer_accuracy.py --task text --max-train 1024 --epochs 3
    python benchmarks/transfer_accuracy.py --task image --image-size 96
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np
from feature_cache import text_encoder, tokenize

import keras_transfer as kt

SEED = 0
HEAD_LR = 1e-3
WARMUP_FRACTION = 0.1
SCRATCH_BN_MOMENTUM = 0.9
WEIGHT_DECAY = 0.01
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0  # EfficientNet-Lite0's (x - 127) / 128


class GrayToRGB(keras.layers.Layer):
    """Scales [0, 1] grey images as EfficientNet-Lite0 expects, resizes, repeats to 3 channels."""

    def __init__(self, image_size: int, **kwargs):
        super().__init__(**kwargs)
        self.image_size = image_size

    def call(self, images):
        pixels = (images * 255.0 - PIXEL_MEAN) / PIXEL_STD
        pixels = keras.ops.image.resize(pixels, (self.image_size, self.image_size))
        return keras.ops.repeat(pixels, 3, axis=-1)


def image_encoder(backbone, image_size: int) -> keras.Model:
    images = keras.Input((28, 28, 1), name="images")
    feature_map = backbone(GrayToRGB(image_size, name="to_rgb")(images))
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(feature_map)
    return keras.Model(images, pooled, name="encoder")


def classifier(encoder, input_shape, input_dtype, num_classes: int, seed=SEED) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(input_shape, dtype=input_dtype),
            encoder,
            keras.layers.Dense(
                num_classes,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                name="head",
            ),
        ]
    )


def compile_model(model, optimizer) -> None:
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def accuracy(model, x, y, batch_size: int) -> float:
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def pretrained_runs(backbone, make_encoder, data, lr: float, decay: float, schedule, args) -> dict:
    """Frozen backbone + head (FeatureCache), then FreezeSchedule + DiscriminativeLR."""
    (x, y), (x_test, y_test), input_shape, input_dtype, num_classes = data
    keras.utils.set_random_seed(SEED)
    encoder = make_encoder(backbone)
    model = classifier(encoder, input_shape, input_dtype, num_classes)
    encoder.trainable = False
    compile_model(model, keras.optimizers.Adam(HEAD_LR))
    start = time.perf_counter()
    cache = kt.FeatureCache(model, batch_size=args.batch_size)
    cache.fit(x, y, epochs=args.head_epochs, batch_size=args.batch_size, verbose=0)
    test_features, _ = cache.extract(x_test, y_test)
    frozen_logits = cache.head.predict(test_features, batch_size=256, verbose=0)
    frozen = float(np.mean(np.argmax(frozen_logits, axis=-1) == y_test))
    frozen_s = time.perf_counter() - start
    log(f"  frozen + head: {frozen:.4f} ({frozen_s:.0f} s)")

    encoder.trainable = True
    plan = groups_that_train(model)
    total_steps = args.epochs * -(-len(y) // args.batch_size)
    adamw = keras.optimizers.AdamW(warmup_cosine(lr, total_steps), weight_decay=WEIGHT_DECAY)
    optimizer = kt.DiscriminativeLR(adamw, plan, decay=decay)
    compile_model(model, optimizer)
    freeze_schedule = kt.FreezeSchedule(plan, schedule, verbose=1)
    log(f"  layer groups: {plan.names}")
    start = time.perf_counter()
    keras.utils.set_random_seed(SEED)
    model.fit(
        x, y, epochs=args.epochs, batch_size=args.batch_size, callbacks=[freeze_schedule], verbose=2
    )
    tuned = accuracy(model, x_test, y_test, args.batch_size)
    tuned_s = time.perf_counter() - start
    log(f"  fine-tuned: {tuned:.4f} ({tuned_s:.0f} s)")
    return {"frozen": frozen, "frozen_s": frozen_s, "fine_tuned": tuned, "fine_tuned_s": tuned_s}


def scratch_run(backbone, make_encoder, data, lr: float, args) -> dict:
    """The same architecture from random initialisation, every layer trained."""
    (x, y), (x_test, y_test), input_shape, input_dtype, num_classes = data
    keras.utils.set_random_seed(SEED)
    random_backbone = type(backbone).from_config(backbone.get_config())
    for layer in random_backbone._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = SCRATCH_BN_MOMENTUM
    model = classifier(make_encoder(random_backbone), input_shape, input_dtype, num_classes)
    total_steps = args.scratch_epochs * -(-len(y) // args.batch_size)
    adamw = keras.optimizers.AdamW(warmup_cosine(lr, total_steps), weight_decay=WEIGHT_DECAY)
    compile_model(model, adamw)
    start = time.perf_counter()
    model.fit(x, y, epochs=args.scratch_epochs, batch_size=args.batch_size, verbose=2)
    scratch = accuracy(model, x_test, y_test, args.batch_size)
    scratch_s = time.perf_counter() - start
    log(f"  scratch: {scratch:.4f} ({scratch_s:.0f} s)")
    return {"scratch": scratch, "scratch_s": scratch_s}


def warmup_cosine(peak_lr: float, total_steps: int):
    """Linear warm-up over the first 10 % of the steps, then cosine decay to 0."""
    warmup_steps = max(1, int(WARMUP_FRACTION * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=total_steps - warmup_steps,
        warmup_target=peak_lr,
        warmup_steps=warmup_steps,
    )


def groups_that_train(model) -> kt.LayerGroupPlan:
    """`kt.layer_groups(model)`, with BERT's pooler merged into the head.

    The encoder mean-pools `sequence_output`, so the pooler's weights get no
    gradient; as a group of its own it would take a stage of the freeze
    schedule and a step of the learning-rate decay.
    """
    groups = kt.layer_groups(model)
    unused = [group for group in groups if group.name == "pooled_dense"]
    if not unused:
        return groups
    head = groups[-1]
    merged = kt.LayerGroup(head.name, unused[0].layers + head.layers)
    kept = [group for group in groups[:-1] if group is not unused[0]]
    return kt.LayerGroupPlan([*kept, merged], model)


def text_experiment(args) -> dict:
    (x_train, y_train), (x_test, y_test) = kt.datasets.load_vader("movies")
    x_train, y_train = x_train[: args.max_train], y_train[: args.max_train]
    x_test, y_test = x_test[: args.max_test], y_test[: args.max_test]
    data = (
        (tokenize(x_train, args.seq_len), y_train),
        (tokenize(x_test, args.seq_len), y_test),
        (args.seq_len,),
        "int32",
        2,
    )
    backbone = kt.load_backbone("minilm_l6")

    def make_encoder(bb):
        return text_encoder(bb, args.seq_len, inference_only=False)

    log(f"text: {len(y_train)} train, {len(y_test)} test sentences")
    schedule = {0: 2, 1: 5, 2: "all"}
    result = pretrained_runs(
        backbone, make_encoder, data, args.text_lr, args.text_decay, schedule, args
    )
    result.update(scratch_run(backbone, make_encoder, data, args.scratch_text_lr, args))
    return {"num_train": len(y_train), "num_test": len(y_test), **result}


def image_experiment(args) -> dict:
    (x_train, y_train), (x_test, y_test) = kt.datasets.load_fashion_mnist()
    x_train, y_train = x_train[: args.image_train], y_train[: args.image_train]
    x_test, y_test = x_test[: args.max_test], y_test[: args.max_test]
    data = ((x_train, y_train), (x_test, y_test), (28, 28, 1), "float32", 10)
    backbone = kt.load_backbone("efficientnet_lite0_imagenet")

    def make_encoder(bb):
        return image_encoder(bb, args.image_size)

    log(f"image: {len(y_train)} train, {len(y_test)} test images at {args.image_size} px")
    schedule = {0: 2, 1: 5, 2: "all"}
    result = pretrained_runs(
        backbone, make_encoder, data, args.image_lr, args.image_decay, schedule, args
    )
    result.update(scratch_run(backbone, make_encoder, data, args.image_lr, args))
    return {"num_train": len(y_train), "num_test": len(y_test), **result}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("text", "image", "all"), default="all")
    parser.add_argument("--max-train", type=int, default=None, help="text training sentences")
    parser.add_argument("--image-train", type=int, default=1000, help="Fashion-MNIST images")
    parser.add_argument("--max-test", type=int, default=None, help="test examples (default all)")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--head-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    parser.add_argument("--scratch-epochs", type=int, default=None, help="default: --epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--text-lr", type=float, default=1e-4, help="peak rate, top group")
    parser.add_argument("--text-decay", type=float, default=1.2, help="rate ratio between groups")
    parser.add_argument("--scratch-text-lr", type=float, default=1e-4)
    parser.add_argument("--image-lr", type=float, default=1e-3, help="peak rate, top group")
    parser.add_argument("--image-decay", type=float, default=1.5)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.scratch_epochs is None:
        args.scratch_epochs = args.epochs
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    results = {"backend": keras.backend.backend(), "settings": vars(args)}
    if args.task in ("text", "all"):
        results["text"] = text_experiment(args)
    if args.task in ("image", "all"):
        results["image"] = image_experiment(args)
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
