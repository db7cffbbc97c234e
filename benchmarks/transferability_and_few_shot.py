"""Transferability scores, few-shot prototype heads and zero-shot text classification, on real data.

Three parts (`--parts`), each on frozen features computed once per backbone
with `kt.FeatureCache.extract` and kept in `kt.cache_dir("benchmarks")`
(a rerun with the same settings reuses them):

1. `ranking`: do the scores rank candidate features as a linear probe does?
   Candidates are layers of real pretrained backbones and of their randomly
   initialised twins (same config, `from_config`, seed 0; negative controls):
   - text (target: VADER movies, `kt.datasets.load_vader("movies")`): MiniLM-L6
     (`kt.load_backbone("minilm_l6")`), `sequence_output` of transformer layers
     2, 4 and 6 mean-pooled over the padding mask, sequence length 64 (as in
     `transfer_accuracy.py`);
   - images (targets: a Fashion-MNIST subset and scikit-learn digits):
     EfficientNet-Lite0 (ImageNet, the zoo's `efficientnet_lite0_imagenet`),
     global average pooled outputs of stage 3 (`block3b_`, 40 channels),
     stage 5 (`block5c_`, 112) and the top (`top_activation`, 1280); grey
     images scaled, resized to `--image-size` and repeated to 3 channels as
     `transfer_accuracy.py` does (default 96 px, not the network's 224, to
     keep the default run short).
   Each candidate is scored on the training subset with
   `kt.transferability.logme` and `.h_score` (and, for the EfficientNet top
   only, `.leep` and `.nce` on the ImageNet classifier's softmax, the random twin getting a random
   1000-class head; they need a source classifier, which MiniLM and the
   intermediate stages do not have), each score timed. The reference is the
   test accuracy of a linear probe (standardised features, scikit-learn
   `LogisticRegression`, C=1) trained on the same subset. Reported: Kendall's
   tau between each score and the probe accuracy per target and pooled over
   the targets (scores are not comparable across datasets, so the pooled tau
   is a rough summary; the mean of the per-target taus is given too). The
   H-score reaches its maximum, classes - 1, whenever a candidate has at
   least as many dimensions as there are training examples (the table says
   where); the defaults keep more examples than dimensions. As a
   cross-check, `kt.rank_backbones` (LogME, `control="random"`) scores the
   whole MiniLM from the raw sentences of the first `--rank-examples` of the
   subset: its LogME should equal this script's layer-6 LogME.
   `--finetune` adds fine-tuning as a second reference. Each candidate's
   backbone (newly loaded, or its random twin rebuilt with seed 0, so that
   no candidate starts from another's fine-tuned weights) is cut at the
   candidate's layer and pooled as above, all of it trainable, under a new
   Dense head; it runs with `training=False` as in the feature passes
   (BatchNorm keeps its stored statistics, no dropout) while its weights
   train. Adam at `--finetune-lr` (default 1e-4, pretrained and random
   twins alike), batch 32, seed 0, `--finetune-epochs` epochs (default 2)
   on the first `--finetune-train` examples of the training subset
   (default: all of it), scored on the same test subset as the probe.
   Reported per candidate: the fine-tuned test accuracy and the training
   seconds (JAX compilation included), next to each score's seconds, and
   Kendall's tau of each score (and of the probe accuracy) against the
   fine-tuned accuracy (`kendall_tau_finetune` in the JSON). This is short
   fine-tuning, within a CPU's budget (full fine-tuning as in
   `transfer_accuracy.py` takes 13 to 44 minutes per model): it measures
   how far each candidate gets in a few epochs, not where it would end.
   With a new head at 1e-4, a few dozen steps are too few for the image
   targets (10 classes): measured runs on 320 Fashion-MNIST images (96 px,
   top) reached 23, 31 and 43 % after 1, 2 and 3 epochs, on 320 movie
   sentences (layer 6) 69 and 81 % after 1 and 2. At 1e-3 the images learn
   faster (54 % after 2 epochs of 160, against 24 % at 1e-4) but MiniLM
   collapses to chance (51 %, against 70 %), hence one rate of 1e-4.
2. `few_shot`: 1, 5, 10 and 20 labelled examples per class (`--shots`) drawn by
   `kt.few_shot_episodes` (`--episodes` episodes per setting, seed 0; the
   episodes' own query sets are not used), on Fashion-MNIST (EfficientNet-Lite0
   top features) and VADER movies (MiniLM layer 6), all scored on a fixed
   test subset:
   - `prototype`: a `kt.PrototypeHead` set from the support features;
   - `linear_probe`: trained on the same support features;
   - `prototype_finetuned`: the head fine-tuned from the prototypes on
     frozen features: `kt.prototype_classifier` over the cached features
     sets the prototypes, which (with the logit scale) are then trained by
     100 full-batch Adam steps (learning rate 1e-3) of cross-entropy on the
     support features only;
   - with `--scratch`, a small model trained from random initialisation on
     the raw support inputs (Adam 1e-3, 100 epochs, batch 32):
     `scratch_cnn` (two convolutions) on the images, `scratch_embedding_bag`
     (32-dimensional embeddings of the MiniLM token ids averaged over the
     non-padding tokens, then Dense) on the sentences.
   Mean ± std over episodes; `--plot` draws accuracy against shots.
3. `zero_shot`: `kt.ZeroShotClassifier` (MiniLM, sequence length 64) with each
   of the description sets in `DESCRIPTIONS` on the four VADER domains' test
   subsets, against the 5-shot prototype head (support from each domain's
   training split, `--episodes` episodes), VADER's rule-based analyser
   (`vaderSentiment`, compound > 0 = positive) and the majority class. The
   classifier's head is applied to the cached MiniLM features; a check on the
   first test sentences compares it with `ZeroShotClassifier.predict` on the
   raw strings, and the prototype head with `kt.prototype_classifier` on the
   backbone.

Subsets are fixed random draws (seed 0) of each split: by default 1,000
training and 2,000 test VADER movie sentences, 2,000 training and 1,000 test
Fashion-MNIST images, all digits, 2,000 test sentences and 200 training ones
per VADER domain for `zero_shot`. Defaults should take roughly
10 to 20 minutes on 2 idle CPU cores with JAX (estimated from the feature
passes' throughput, most of the time); `--quick` is a smoke test of a
minute or two whose numbers mean little. `--finetune` costs far more: about
0.11 s per training sentence and epoch for MiniLM layer 6 (0.22 s for layers
2, 4 and 6 together) and, at 96 px, 0.15, 0.24 and 0.31 s per image and
epoch for EfficientNet stage 3, stage 5 and the top, twice that with the
random twins, plus about half a minute per candidate to compile and load
and the test passes (some 15 minutes on the default test subsets): about
3.3 hours with the defaults, about 40 minutes with `--finetune-train 160`
(measured with JAX on the 2-core machine, which XLA kept to about one core
busy). `--quick --finetune` took half an hour on a busy machine.

Usage (KERAS_BACKEND selects the backend; JAX is the quickest here):

    KERAS_BACKEND=jax python benchmarks/transferability_and_few_shot.py \\
        --json benchmarks/results/transferability_and_few_shot.json \\
        --plot benchmarks/results/few_shot.png
    KERAS_BACKEND=jax python benchmarks/transferability_and_few_shot.py --quick
    KERAS_BACKEND=jax python benchmarks/transferability_and_few_shot.py --parts few_shot \\
        --episodes 50 --scratch
    KERAS_BACKEND=jax python benchmarks/transferability_and_few_shot.py --parts ranking \\
        --image-size 224 --image-train 4000
    KERAS_BACKEND=jax python benchmarks/transferability_and_few_shot.py --parts ranking \\
        --finetune --finetune-train 500 --finetune-epochs 2
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time

import keras
import numpy as np
from feature_cache import BertInputs, MaskedMeanPooling, build_model, tokenize
from transfer_accuracy import GrayToRGB

import keras_transfer as kt

PARTS = ("ranking", "few_shot", "zero_shot")
SCORES = ("logme", "h_score", "leep", "nce")
DOMAINS = ("movies", "amazon", "nyt", "tweets")
SEQUENCE_LENGTH = 64
TEXT_LAYERS = (2, 4, 6)
TEXT_FEATURES = f"minilm_layer{TEXT_LAYERS[-1]}"  # = MiniLM's mean-pooled sequence_output.
IMAGE_STAGES = {"stage3": "block3b_", "stage5": "block5c_", "top": "top_activation"}
IMAGE_DATA = {"fashion": kt.datasets.load_fashion_mnist, "digits": kt.datasets.load_digits}
LINEAR_PROBE_C = 1.0
FINETUNE_BATCH_SIZE = 32  # `--finetune`.
PROTOTYPE_STEPS = 100  # `prototype_finetuned`: full-batch Adam steps on the support set,
PROTOTYPE_LEARNING_RATE = 1e-3  # at this learning rate.
MINILM_VOCABULARY = 30522  # Token ids of `tokenize` (the embedding bag's input).
# VADER labels: 0 negative, 1 positive; descriptions are given in that order.
DESCRIPTIONS = {
    "plain": {"negative": "a negative sentence", "positive": "a positive sentence"},
    "words": {"negative": "bad, terrible, awful", "positive": "good, great, excellent"},
    "ensemble": {
        "negative": ["a negative sentence", "this is bad", "I hated it", "a sad or angry text"],
        "positive": ["a positive sentence", "this is good", "I loved it", "a happy or glad text"],
    },
}


# Features ------------------------------------------------------------------


class Features:
    """Pooled features of one backbone (pretrained or its random twin) over
    fixed random subsets of the datasets' splits, kept on disk.

    A subset is the first `count` examples of a seeded permutation of the
    split, so a smaller subset is a prefix of a larger one and is sliced
    from it; only missing examples go through the backbone.
    """

    def __init__(self, kind: str, twin: bool, args):
        self.kind, self.twin, self.args = kind, twin, args
        self._model = None
        self.seconds = 0.0  # Feature passes run in this process.

    def get(self, dataset: str, split: str, count: int | None):
        """`(features by candidate, labels, inputs)` of the first `count` examples."""
        inputs, labels = self._split(dataset, split)
        count = len(labels) if count is None else min(count, len(labels))
        suffix = f"len{SEQUENCE_LENGTH}" if self.kind == "text" else f"px{self.args.image_size}"
        tag = "random" if self.twin else "pretrained"
        path = kt.cache_dir("benchmarks") / f"transferability_{dataset}_{split}_{tag}_{suffix}.npz"
        stored = dict(np.load(path)) if path.exists() else {}
        have = len(next(iter(stored.values()))) if stored else 0
        if have < count:
            start = time.perf_counter()
            new = self._extract(inputs[have:count], labels[have:count])
            self.seconds += time.perf_counter() - start
            stored = {k: np.concatenate([stored[k], new[k]]) if stored else new[k] for k in new}
            np.savez(path, **stored)
        features = {name: values[:count] for name, values in stored.items()}
        return features, labels[:count], inputs[:count]

    def _split(self, dataset, split):
        if self.kind == "text":
            train, test = kt.datasets.load_vader(dataset)
        else:
            train, test = IMAGE_DATA[dataset]()
        x, y = train if split == "train" else test
        order = np.random.default_rng(0).permutation(len(y))
        return x[order], y[order]

    def _extract(self, inputs, labels):
        model, names, sizes = self._feature_model()
        if self.kind == "text":
            inputs = tokenize(inputs, SEQUENCE_LENGTH)
        cache = kt.FeatureCache(model, backbone="encoder", batch_size=self.args.batch_size)
        stacked, _ = cache.extract(inputs, labels)
        parts = np.split(np.asarray(stacked, "float32"), np.cumsum(sizes)[:-1], axis=1)
        return dict(zip(names, parts))

    def _feature_model(self):
        if self._model is None:
            keras.utils.set_random_seed(0)
            if self.kind == "text":
                backbone = minilm()
                if self.twin:
                    backbone = type(backbone).from_config(backbone.get_config())
                encoder, names, sizes = _text_encoder(backbone)
                model = build_model(encoder, SEQUENCE_LENGTH)
            else:
                classifier = kt.zoo.load_efficientnet_lite0_imagenet()
                backbone = classifier.backbone
                if self.twin:
                    backbone = type(backbone).from_config(backbone.get_config())
                encoder, names, sizes = _image_encoder(backbone, self.args.image_size)
                model = keras.Sequential([keras.Input((None, None, 1)), encoder, _dense(10)])
                model.compile(loss="sparse_categorical_crossentropy")
                self.source_head = classifier.get_layer("predictions")
                if self.twin:  # A random 1000-class head for the random twin.
                    self.source_head = keras.layers.Dense.from_config(self.source_head.get_config())
                    self.source_head.build((None, sizes[-1]))
            self._model = (model, names, sizes)
        return self._model

    def source_probabilities(self, top_features):
        """The ImageNet classifier's softmax from pooled top features (images only)."""
        self._feature_model()
        logits = self.source_head(top_features)
        return keras.ops.convert_to_numpy(keras.ops.softmax(logits)).astype("float64")


def _dense(units):
    return keras.layers.Dense(units, kernel_initializer=keras.initializers.GlorotUniform(0))


def _text_encoder(backbone, layers=TEXT_LAYERS):
    """Token ids -> MiniLM's transformer `layers` (1-based), each mean-pooled, concatenated."""
    token_ids = keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="token_ids")
    inputs = BertInputs(name="bert_inputs")(token_ids)
    outputs = [backbone.get_layer(f"transformer_layer_{n - 1}").output for n in layers]
    sequences = keras.Model(backbone.input, outputs, name="layers")(inputs, training=False)
    pooled = [
        MaskedMeanPooling(name=f"mean_pool_{n}")(sequence, inputs["padding_mask"])
        for n, sequence in zip(layers, sequences)
    ]
    return _concatenated(token_ids, pooled, [f"minilm_layer{n}" for n in layers])


def _image_encoder(backbone, image_size: int, stages=tuple(IMAGE_STAGES)):
    """Grey images -> EfficientNet-Lite0's `stages` (`IMAGE_STAGES` keys), each
    average-pooled, concatenated."""
    images = keras.Input((None, None, 1), name="images")
    maps = [backbone.get_layer(IMAGE_STAGES[stage]).output for stage in stages]
    cut = keras.Model(backbone.input, maps, name="stages")
    outputs = cut(GrayToRGB(image_size, name="to_rgb")(images), training=False)
    pooled = [keras.layers.GlobalAveragePooling2D()(feature_map) for feature_map in outputs]
    return _concatenated(images, pooled, [f"effnet_{stage}" for stage in stages])


def _concatenated(inputs, pooled, names):
    """(a frozen encoder that outputs the `pooled` parts concatenated, their names, their sizes)."""
    encoder = keras.Model(inputs, keras.layers.Concatenate()(pooled), name="encoder")
    encoder.trainable = False
    return encoder, names, [part.shape[-1] for part in pooled]


@functools.cache
def minilm() -> keras.Model:
    """The pretrained MiniLM-L6, loaded once (feature passes, zero-shot, rank_backbones)."""
    return kt.load_backbone("minilm_l6")


def fresh_backbone(kind: str, twin: bool) -> keras.Model:
    """A newly loaded pretrained backbone (never `minilm()`'s shared one), or its
    random twin (seed 0): fine-tuning may change its weights."""
    if kind == "text":
        backbone = kt.load_backbone("minilm_l6")
    else:
        backbone = kt.zoo.load_efficientnet_lite0_imagenet().backbone
    if twin:
        keras.utils.set_random_seed(0)
        backbone = type(backbone).from_config(backbone.get_config())
    return backbone


# Classifiers on features ------------------------------------------------------


def linear_probe(x_train, y_train, x_test, y_test) -> float:
    """Test accuracy of standardised logistic regression trained on `x_train`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=LINEAR_PROBE_C, max_iter=2000))
    probe.fit(x_train, y_train)
    return float(np.mean(probe.predict(x_test) == y_test))


def prototype_accuracy(x_support, y_support, x_test, y_test, num_classes: int) -> float:
    head = kt.PrototypeHead(num_classes)
    head.set_prototypes(x_support, y_support)
    predictions = keras.ops.convert_to_numpy(head(x_test)).argmax(axis=1)
    return float(np.mean(predictions == y_test))


def prototype_finetuned_accuracy(x_support, y_support, x_test, y_test, num_classes: int) -> float:
    """The prototype head fine-tuned on frozen features: `kt.prototype_classifier`
    over the cached features (an identity encoder) sets the prototypes from the
    support set, then they and the scale take `PROTOTYPE_STEPS` full-batch Adam
    steps of cross-entropy on the same support features."""
    features = keras.Sequential(
        [keras.Input(x_support.shape[1:]), keras.layers.Identity()], name="cached_features"
    )
    model = kt.prototype_classifier(
        features, x_support, y_support, num_classes=num_classes, activation=None
    )
    model.compile(
        optimizer=keras.optimizers.Adam(PROTOTYPE_LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_support, y_support, epochs=PROTOTYPE_STEPS, batch_size=len(y_support), verbose=0)
    return _accuracy(model, x_test, y_test)


def scratch_accuracy(x_support, y_support, x_test, y_test, num_classes: int, seed: int) -> float:
    """A small model trained from random initialisation on the raw support
    inputs: a CNN on images, an embedding bag on token ids (integer inputs)."""
    keras.utils.set_random_seed(seed)
    if np.issubdtype(x_support.dtype, np.integer):
        layers = [
            keras.Input(x_support.shape[1:], dtype="int32"),
            keras.layers.Embedding(MINILM_VOCABULARY, 32, mask_zero=True),
            keras.layers.GlobalAveragePooling1D(),
        ]
    else:
        layers = [
            keras.Input(x_support.shape[1:]),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    model = keras.Sequential([*layers, keras.layers.Dense(num_classes)])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_support, y_support, epochs=100, batch_size=32, verbose=0)
    return _accuracy(model, x_test, y_test)


def finetuned_accuracy(kind, twin, candidate, x_train, y_train, x_test, y_test, args):
    """`(test accuracy, training seconds)` of the backbone cut at `candidate` and
    pooled as in the feature passes, all of it trainable, under a new Dense head.

    The backbone is newly loaded (or its random twin rebuilt) for each
    candidate; it runs with `training=False` as in the feature passes
    (BatchNorm on its stored statistics, no dropout), its weights trained.
    """
    backbone = fresh_backbone(kind, twin)
    if kind == "text":
        encoder, _, _ = _text_encoder(backbone, [int(candidate.removeprefix("minilm_layer"))])
    else:
        stage = candidate.removeprefix("effnet_")
        encoder, _, _ = _image_encoder(backbone, args.image_size, [stage])
    encoder.trainable = True
    keras.utils.set_random_seed(0)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    model = keras.Sequential(
        [keras.Input(x_train.shape[1:], dtype=x_train.dtype), encoder, _dense(num_classes)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.finetune_lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    start = time.perf_counter()
    model.fit(
        x_train, y_train, epochs=args.finetune_epochs, batch_size=FINETUNE_BATCH_SIZE, verbose=0
    )
    seconds = time.perf_counter() - start
    return _accuracy(model, x_test, y_test, args.batch_size), seconds


def _accuracy(model, x, y, batch_size: int = 256) -> float:
    predictions = model.predict(x, batch_size=batch_size, verbose=0).argmax(axis=1)
    return float(np.mean(predictions == y))


def _model_inputs(kind: str, inputs):
    """What a model on raw inputs takes: token ids for sentences, images as they are."""
    return tokenize(inputs, SEQUENCE_LENGTH) if kind == "text" else inputs


# Parts ---------------------------------------------------------------------


def ranking(extractors, args) -> dict:
    targets = [("movies", "text", args.text_train, args.text_test)]
    targets += [(name, "image", args.image_train, args.image_test) for name in IMAGE_DATA]
    rows = []
    for target, kind, train_count, test_count in targets:
        for twin in (False, True):
            extractor = extractors[kind, twin]
            train, y_train, x_train = extractor.get(target, "train", train_count)
            test, y_test, x_test = extractor.get(target, "test", test_count)
            if args.finetune:
                tuning = (
                    _model_inputs(kind, x_train[: args.finetune_train]),
                    y_train[: args.finetune_train],
                    _model_inputs(kind, x_test),
                    y_test,
                )
            for candidate in train:
                row = {"target": target, "candidate": candidate, "random_init": twin}
                row.update(_scores(train[candidate], y_train, candidate, extractor))
                row["probe_accuracy"] = linear_probe(
                    train[candidate], y_train, test[candidate], y_test
                )
                if args.finetune:
                    accuracy, seconds = finetuned_accuracy(kind, twin, candidate, *tuning, args)
                    row.update(
                        finetune_accuracy=accuracy,
                        finetune_s=seconds,
                        finetune_train_examples=len(tuning[1]),
                    )
                row.update(
                    train_examples=len(y_train),
                    test_examples=len(y_test),
                    dimensions=train[candidate].shape[1],
                )
                rows.append(row)
                log(f"ranking {target} {_label(row)}: {_row_numbers(row)}")
    result = {"rows": rows, "kendall_tau": kendall_taus(rows, "probe_accuracy")}
    if args.finetune:
        result["finetune_epochs"] = args.finetune_epochs
        result["finetune_learning_rate"] = args.finetune_lr
        result["kendall_tau_finetune"] = kendall_taus(
            rows, "finetune_accuracy", ("probe_accuracy", *SCORES)
        )
    result["rank_backbones"] = _rank_backbones(extractors, args)
    return result


def kendall_taus(rows, reference: str, methods=SCORES) -> dict:
    """Kendall's tau between each of `methods` and `reference` per target, pooled
    over the targets, and its mean per target."""
    from scipy.stats import kendalltau

    taus = {}
    for method in methods:
        per_target = {}
        for target in dict.fromkeys(r["target"] for r in rows):
            scored = [r for r in rows if r["target"] == target and method in r]
            if len(scored) >= 2:
                tau = kendalltau([r[method] for r in scored], [r[reference] for r in scored])
                per_target[target] = {"tau": float(tau.statistic), "candidates": len(scored)}
        scored = [r for r in rows if method in r]
        pooled = kendalltau([r[method] for r in scored], [r[reference] for r in scored])
        taus[method] = {
            "per_target": per_target,
            "pooled": float(pooled.statistic),
            "mean_per_target": statistics.mean(t["tau"] for t in per_target.values()),
        }
    return taus


def _scores(features, labels, candidate, extractor) -> dict:
    scores = {}
    for method, score in (
        ("logme", kt.transferability.logme),
        ("h_score", kt.transferability.h_score),
    ):
        start = time.perf_counter()
        scores[method] = score(features, labels)
        scores[f"{method}_s"] = time.perf_counter() - start
    if candidate == "effnet_top":
        probabilities = extractor.source_probabilities(features)
        for method, score, source in (
            ("leep", kt.transferability.leep, probabilities),
            ("nce", kt.transferability.nce, probabilities.argmax(axis=1)),
        ):
            start = time.perf_counter()
            scores[method] = score(source, labels)
            scores[f"{method}_s"] = time.perf_counter() - start
    return scores


def _rank_backbones(extractors, args) -> dict:
    """`kt.rank_backbones` (LogME, random control) on the whole MiniLM, from raw sentences.

    Its features are the mean-pooled last layer, so its score should equal
    the `minilm_layer6` LogME on the same sentences (a prefix of the subset).
    """
    _, y_train, texts = extractors["text", False].get("movies", "train", args.rank_examples)
    keras.utils.set_random_seed(0)
    ranking = kt.rank_backbones(
        {"minilm_l6": minilm()},
        texts,
        y_train,
        preprocessors=kt.load_preprocessor("minilm_l6", sequence_length=SEQUENCE_LENGTH),
        control="random",
        batch_size=args.batch_size,
        verbose=0,
    )
    print(ranking)
    row = ranking["minilm_l6"]
    ours = {}
    for twin in (False, True):
        features, labels, _ = extractors["text", twin].get("movies", "train", args.rank_examples)
        ours[twin] = kt.transferability.logme(features[TEXT_FEATURES], labels)
    return {
        "examples": len(y_train),
        "logme": row.score,
        "random_logme": row.random_score,
        "seconds": row.seconds,
        "benchmark_logme": ours[False],
        "benchmark_random_logme": ours[True],
    }


def few_shot(extractors, args) -> list[dict]:
    settings = [
        ("fashion", "image", "effnet_top", args.image_train, args.image_test, 10),
        ("movies", "text", TEXT_FEATURES, args.text_train, args.text_test, 2),
    ]
    scratch = {
        "image": ("scratch_cnn", "raw pixels"),
        "text": ("scratch_embedding_bag", "token ids"),
    }
    rows = []
    for dataset, kind, candidate, train_count, test_count, num_classes in settings:
        extractor = extractors[kind, False]
        train, y_train, x_train = extractor.get(dataset, "train", train_count)
        test, y_test, x_test = extractor.get(dataset, "test", test_count)
        features, test_features = train[candidate], test[candidate]
        if args.scratch:
            x_train, x_test = _model_inputs(kind, x_train), _model_inputs(kind, x_test)
        scratch_method, scratch_inputs = scratch[kind]
        smallest = int(np.bincount(y_train).min())
        for shots in args.shots:
            if shots + 1 > smallest:  # The episodes draw one (unused) query too.
                log(f"few-shot {dataset}: skip {shots} shots, smallest class in pool: {smallest}")
                continue
            episodes = kt.few_shot_episodes(
                np.arange(len(y_train)), y_train, shots, queries=1, episodes=args.episodes
            )
            results = {"prototype": [], "linear_probe": [], "prototype_finetuned": []}
            if args.scratch:
                results[scratch_method] = []
            for index, episode in enumerate(episodes):
                support, labels = features[episode.x_support], episode.y_support
                results["prototype"].append(
                    prototype_accuracy(support, labels, test_features, y_test, num_classes)
                )
                results["linear_probe"].append(linear_probe(support, labels, test_features, y_test))
                results["prototype_finetuned"].append(
                    prototype_finetuned_accuracy(
                        support, labels, test_features, y_test, num_classes
                    )
                )
                if args.scratch:
                    results[scratch_method].append(
                        scratch_accuracy(
                            x_train[episode.x_support], labels, x_test, y_test, num_classes, index
                        )
                    )
            for method, accuracies in results.items():
                rows.append(
                    {
                        "dataset": dataset,
                        "features": scratch_inputs if method == scratch_method else candidate,
                        "shots": shots,
                        "method": method,
                        "accuracies": accuracies,
                        "test_examples": len(y_test),
                    }
                )
            log(
                f"few-shot {dataset} {shots}-shot: "
                + ", ".join(f"{m} {_mean_std([100 * x for x in a])} %" for m, a in results.items())
            )
    return rows


def zero_shot(extractors, args) -> list[dict]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    preprocessor = kt.load_preprocessor("minilm_l6", sequence_length=SEQUENCE_LENGTH)
    classifiers = {
        name: kt.ZeroShotClassifier(minilm(), descriptions, preprocessor)
        for name, descriptions in DESCRIPTIONS.items()
    }
    analyser = SentimentIntensityAnalyzer()
    extractor = extractors["text", False]
    rows = []
    for domain in DOMAINS:
        test, y_test, texts = extractor.get(domain, "test", args.zero_shot_test)
        pool, y_pool, _ = extractor.get(domain, "train", args.pool)
        test_features, pool_features = test[TEXT_FEATURES], pool[TEXT_FEATURES]
        results = {}
        for name, classifier in classifiers.items():
            head = classifier.model.get_layer("descriptions")
            predictions = keras.ops.convert_to_numpy(head(test_features)).argmax(axis=1)
            results[f"zero-shot: {name}"] = [float(np.mean(predictions == y_test))]
        episodes = kt.few_shot_episodes(
            np.arange(len(y_pool)), y_pool, 5, queries=1, episodes=args.episodes
        )
        results["5-shot prototype"] = [
            prototype_accuracy(pool_features[e.x_support], e.y_support, test_features, y_test, 2)
            for e in episodes
        ]
        compound = np.array([analyser.polarity_scores(text)["compound"] for text in texts])
        results["VADER rules (compound > 0)"] = [float(np.mean((compound > 0) == y_test))]
        results["majority class"] = [float(max(np.mean(y_test), 1 - np.mean(y_test)))]
        for method, accuracies in results.items():
            rows.append({"domain": domain, "method": method, "accuracies": accuracies})
        log(f"zero-shot {domain} ({len(y_test)} test sentences) done")
    _check_library_paths(classifiers["plain"], preprocessor, extractor)
    return rows


def _check_library_paths(classifier, preprocessor, extractor, count: int = 32) -> None:
    """The cached features stand in for the library's own encoder passes: check they agree."""
    test, _, texts = extractor.get("movies", "test", count)
    pool, y_pool, pool_texts = extractor.get("movies", "train", 5 * count)
    head = classifier.model.get_layer("descriptions")
    cached = keras.ops.convert_to_numpy(keras.ops.softmax(head(test[TEXT_FEATURES])))
    zero_shot_diff = np.abs(classifier.predict(texts) - cached).max()

    def tokens(batch):
        return {key: np.asarray(value) for key, value in preprocessor(list(batch)).items()}

    episode = kt.few_shot_episodes(np.arange(len(y_pool)), y_pool, 5, queries=1, episodes=1)[0]
    library = kt.prototype_classifier(
        minilm(), tokens(pool_texts[episode.x_support]), episode.y_support, num_classes=2
    ).predict(tokens(texts), verbose=0)
    head = kt.PrototypeHead(2)
    head.set_prototypes(pool[TEXT_FEATURES][episode.x_support], episode.y_support)
    ours = keras.ops.convert_to_numpy(keras.ops.softmax(head(test[TEXT_FEATURES])))
    log(
        f"check on {len(texts)} movie test sentences, max |difference| of probabilities: "
        f"ZeroShotClassifier.predict vs its head on cached features {zero_shot_diff:.1e}; "
        f"prototype_classifier vs PrototypeHead on cached features "
        f"{np.abs(library - ours).max():.1e}"
    )


# Report ----------------------------------------------------------------------


def ranking_table(result) -> str:
    rows = result["rows"]
    finetuned = "kendall_tau_finetune" in result
    header = ["target", "candidate", "LogME", "s", "H-score", "s", "LEEP", "NCE", "probe acc %"]
    lines = [header + (["fine-tuned acc %", "s"] if finetuned else [])]
    for row in rows:
        lines.append(
            [
                row["target"],
                _label(row),
                f"{row['logme']:.4f}",
                f"{row['logme_s']:.2f}",
                f"{row['h_score']:.3f}",
                f"{row['h_score_s']:.2f}",
                f"{row['leep']:.4f}" if "leep" in row else "-",
                f"{row['nce']:.4f}" if "nce" in row else "-",
                f"{100 * row['probe_accuracy']:.1f}",
            ]
            + (
                [f"{100 * row['finetune_accuracy']:.1f}", f"{row['finetune_s']:.0f}"]
                if finetuned
                else []
            )
        )
    text = _table(lines)
    text += "\nLEEP / NCE: only for the EfficientNet top (the ImageNet classifier's softmax); "
    text += "MiniLM and intermediate stages have no source classifier.\n"
    saturated = sorted(
        {
            f"{row['target']} {row['candidate']}"
            for row in result["rows"]
            if row["train_examples"] <= row["dimensions"] + 1
        }
    )
    if saturated:
        text += (
            "H-score is saturated at classes - 1 (as many dimensions as examples: the "
            f"covariance is singular) for: {', '.join(saturated)}.\n"
        )
    if finetuned:
        mean = {
            k: statistics.mean(r[k] for r in rows) for k in ("finetune_s", "logme_s", "h_score_s")
        }
        examples = ", ".join(sorted({str(r["finetune_train_examples"]) for r in rows}, key=int))
        text += (
            "Fine-tuned: the backbone cut at the candidate, all trainable, + a Dense head; "
            f"Adam {result['finetune_learning_rate']:g}, {result['finetune_epochs']} epochs on the "
            f"first {examples} training examples; s = training time. Mean seconds per "
            f"candidate: fine-tuning {mean['finetune_s']:.1f}, LogME {mean['logme_s']:.3f}, "
            f"H-score {mean['h_score_s']:.3f}.\n"
        )
    text += "\nKendall's tau, score vs linear-probe accuracy:\n" + _tau_table(result["kendall_tau"])
    if finetuned:
        text += "\n\nKendall's tau, score (and probe accuracy) vs fine-tuned accuracy:\n"
        text += _tau_table(result["kendall_tau_finetune"])
    check = result["rank_backbones"]
    return (
        text
        + f"\n\nkt.rank_backbones on {check['examples']} movie sentences: LogME "
        + f"{check['logme']:.4f} (this script's layer 6: {check['benchmark_logme']:.4f}), "
        + f"random twin {check['random_logme']:.4f} ({check['benchmark_random_logme']:.4f}), "
        + f"{check['seconds']:.1f} s"
    )


def _tau_table(taus) -> str:
    targets = list(dict.fromkeys(t for tau in taus.values() for t in tau["per_target"]))
    lines = [["score", *targets, "pooled", "mean per target"]]
    for method, tau in taus.items():
        lines.append(
            [method]
            + [
                f"{tau['per_target'][t]['tau']:+.2f} (n={tau['per_target'][t]['candidates']})"
                if t in tau["per_target"]
                else "-"
                for t in targets
            ]
            + [f"{tau['pooled']:+.2f}", f"{tau['mean_per_target']:+.2f}"]
        )
    return _table(lines)


def accuracy_table(rows, keys) -> str:
    lines = [[*keys, "accuracy % (mean ± std)", "runs"]]
    for row in rows:
        lines.append(
            [str(row[key]) for key in keys]
            + [_mean_std([100 * a for a in row["accuracies"]]), str(len(row["accuracies"]))]
        )
    return _table(lines)


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({row["dataset"] for row in rows})
    figure, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        for method in dict.fromkeys(row["method"] for row in rows):
            points = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            if points:
                axis.errorbar(
                    [r["shots"] for r in points],
                    [100 * np.mean(r["accuracies"]) for r in points],
                    yerr=[
                        100 * np.std(r["accuracies"], ddof=min(1, len(r["accuracies"]) - 1))
                        for r in points
                    ],
                    marker="o",
                    capsize=3,
                    label=method,
                )
        shots = sorted({r["shots"] for r in rows if r["dataset"] == dataset})
        axis.set(xscale="log", xlabel="labelled examples per class", ylabel="test accuracy %")
        axis.set_xticks(shots, [str(count) for count in shots])
        axis.minorticks_off()
        axis.set_title(dataset)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)


def _label(row) -> str:
    return row["candidate"] + (" (random)" if row["random_init"] else "")


def _row_numbers(row) -> str:
    keys = [k for k in (*SCORES, "probe_accuracy", "finetune_accuracy", "finetune_s") if k in row]
    return ", ".join(f"{k} {row[k]:.4g}" for k in keys)


def _mean_std(values) -> str:
    if len(values) < 2:
        return f"{statistics.mean(values):.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _table(lines) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# Main ----------------------------------------------------------------------


QUICK = dict(
    text_train=48,
    text_test=48,
    image_train=200,
    image_test=100,
    image_size=64,
    zero_shot_test=48,
    pool=24,
    episodes=3,
    shots=[1, 5],
    rank_examples=32,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--text-train", type=int, default=1000, help="VADER movie training subset")
    parser.add_argument("--text-test", type=int, default=2000, help="VADER movie test subset")
    parser.add_argument(
        "--image-train", type=int, default=2000, help="image training subset (digits have 1,438)"
    )
    parser.add_argument("--image-test", type=int, default=1000, help="image test subset")
    parser.add_argument("--image-size", type=int, default=96, help="resize images to this")
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5, 10, 20])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument(
        "--scratch",
        action="store_true",
        help="few-shot: add a CNN (images) / embedding bag (text) trained from scratch",
    )
    parser.add_argument("--zero-shot-test", type=int, default=2000, help="test sentences/domain")
    parser.add_argument("--pool", type=int, default=200, help="5-shot support pool per domain")
    parser.add_argument(
        "--rank-examples", type=int, default=256, help="kt.rank_backbones cross-check sentences"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="examples per backbone pass")
    parser.add_argument(
        "--finetune", action="store_true", help="ranking: also fine-tune every candidate"
    )
    parser.add_argument("--finetune-epochs", type=int, default=2, help="fine-tuning epochs")
    parser.add_argument(
        "--finetune-lr", type=float, default=1e-4, help="fine-tuning Adam learning rate"
    )
    parser.add_argument(
        "--finetune-train",
        type=int,
        help="fine-tune on the first N examples of each training subset (default: all of it)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test: tiny subsets")
    parser.add_argument("--json", help="write every number there")
    parser.add_argument("--plot", help="few-shot: save accuracy against shots there")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.time()
    extractors = {
        (kind, twin): Features(kind, twin, args) for kind in ("text", "image") for twin in (0, 1)
    }
    results = {"args": vars(args), "backend": keras.backend.backend()}
    tables = []
    if "ranking" in args.parts:
        results["ranking"] = ranking(extractors, args)
        tables.append("Ranking\n" + ranking_table(results["ranking"]))
    if "few_shot" in args.parts:
        results["few_shot"] = few_shot(extractors, args)
        tables.append(
            "Few-shot\n"
            + accuracy_table(results["few_shot"], ("dataset", "features", "shots", "method"))
        )
        if args.plot:
            plot(results["few_shot"], args.plot)
    if "zero_shot" in args.parts:
        results["zero_shot"] = zero_shot(extractors, args)
        tables.append("Zero-shot\n" + accuracy_table(results["zero_shot"], ("domain", "method")))
    results["feature_pass_s"] = {
        f"{kind}{' random' if twin else ''}": round(e.seconds, 1)
        for (kind, twin), e in extractors.items()
    }
    results["total_s"] = round(time.time() - start, 1)
    print("\n\n".join(tables))
    print(
        f"feature passes (s): {results['feature_pass_s']}; total {results['total_s']:.0f} s, "
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{platform.processor() or platform.machine()}"
    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
