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
   subset: its LogME should equal this script's layer-6 LogME. Fine-tuning
   every candidate would be the better reference but takes hours on a CPU
   (`transfer_accuracy.py` spends 13 to 44 minutes per model), so it is not
   done.
2. `few_shot`: 1, 5, 10 and 20 labelled examples per class (`--shots`) drawn by
   `kt.few_shot_episodes` (`--episodes` episodes per setting, seed 0; the
   episodes' own query sets are not used), on Fashion-MNIST (EfficientNet-Lite0
   top features) and VADER movies (MiniLM layer 6): a `kt.PrototypeHead` set
   from the support features against a linear probe trained on the same
   support set, both scored on a fixed test subset; `--scratch` adds a small
   CNN trained from scratch on the raw support images. Mean ± std over
   episodes; `--plot` draws accuracy against shots.
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
minute or two whose numbers mean little.

Usage (KERAS_BACKEND selects the backend; JAX is the quickest here):

    KERAS_BACKEND=jax python benchmarks/transferability_and_few_shot.py \\
        --json benchmarks/results/transferability_and_few_shot.json \\
        --plot benchmarks/results/few_shot.png
    KERAS_BACKEND=jax python benchmarks/transferability_and_few_shot.py --quick
    KERAS_BACKEND=jax python benchmarks/transferability_and_few_shot.py --parts few_shot \\
        --episodes 50 --scratch
    KERAS_BACKEND=jax python benchmarks/transferability_and_few_shot.py --parts ranking \\
        --image-size 224 --image-train 4000
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
DOMAINS = ("movies", "amazon", "nyt", "tweets")
SEQUENCE_LENGTH = 64
TEXT_LAYERS = (2, 4, 6)
TEXT_FEATURES = f"minilm_layer{TEXT_LAYERS[-1]}"  # = MiniLM's mean-pooled sequence_output.
IMAGE_STAGES = {"stage3": "block3b_", "stage5": "block5c_", "top": "top_activation"}
IMAGE_DATA = {"fashion": kt.datasets.load_fashion_mnist, "digits": kt.datasets.load_digits}
LINEAR_PROBE_C = 1.0
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


def _text_encoder(backbone):
    """Token ids -> MiniLM's layers `TEXT_LAYERS`, each mean-pooled, concatenated."""
    token_ids = keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="token_ids")
    inputs = BertInputs(name="bert_inputs")(token_ids)
    layers = [backbone.get_layer(f"transformer_layer_{n - 1}").output for n in TEXT_LAYERS]
    sequences = keras.Model(backbone.input, layers, name="layers")(inputs, training=False)
    pooled = [
        MaskedMeanPooling(name=f"mean_pool_{n}")(sequence, inputs["padding_mask"])
        for n, sequence in zip(TEXT_LAYERS, sequences)
    ]
    return _concatenated(token_ids, pooled, [f"minilm_layer{n}" for n in TEXT_LAYERS])


def _image_encoder(backbone, image_size: int):
    """Grey images -> EfficientNet-Lite0's `IMAGE_STAGES`, each average-pooled, concatenated."""
    images = keras.Input((None, None, 1), name="images")
    maps = [backbone.get_layer(layer).output for layer in IMAGE_STAGES.values()]
    stages = keras.Model(backbone.input, maps, name="stages")
    outputs = stages(GrayToRGB(image_size, name="to_rgb")(images), training=False)
    pooled = [keras.layers.GlobalAveragePooling2D()(feature_map) for feature_map in outputs]
    return _concatenated(images, pooled, [f"effnet_{stage}" for stage in IMAGE_STAGES])


def _concatenated(inputs, pooled, names):
    """(a frozen encoder that outputs the `pooled` parts concatenated, their names, their sizes)."""
    encoder = keras.Model(inputs, keras.layers.Concatenate()(pooled), name="encoder")
    encoder.trainable = False
    return encoder, names, [part.shape[-1] for part in pooled]


@functools.cache
def minilm() -> keras.Model:
    """The pretrained MiniLM-L6, loaded once (feature passes, zero-shot, rank_backbones)."""
    return kt.load_backbone("minilm_l6")


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


def scratch_accuracy(x_support, y_support, x_test, y_test, num_classes: int, seed: int) -> float:
    """A small CNN trained from random initialisation on the raw support images."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(x_support.shape[1:]),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(num_classes),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_support, y_support, epochs=100, batch_size=32, verbose=0)
    predictions = model.predict(x_test, batch_size=256, verbose=0).argmax(axis=1)
    return float(np.mean(predictions == y_test))


# Parts ---------------------------------------------------------------------


def ranking(extractors, args) -> dict:
    from scipy.stats import kendalltau

    targets = [("movies", "text", args.text_train, args.text_test)]
    targets += [(name, "image", args.image_train, args.image_test) for name in IMAGE_DATA]
    rows = []
    for target, kind, train_count, test_count in targets:
        for twin in (False, True):
            extractor = extractors[kind, twin]
            train, y_train, _ = extractor.get(target, "train", train_count)
            test, y_test, _ = extractor.get(target, "test", test_count)
            for candidate in train:
                row = {"target": target, "candidate": candidate, "random_init": twin}
                row.update(_scores(train[candidate], y_train, candidate, extractor))
                row["probe_accuracy"] = linear_probe(
                    train[candidate], y_train, test[candidate], y_test
                )
                row.update(
                    train_examples=len(y_train),
                    test_examples=len(y_test),
                    dimensions=train[candidate].shape[1],
                )
                rows.append(row)
                log(f"ranking {target} {_label(row)}: {_row_numbers(row)}")
    methods = ("logme", "h_score", "leep", "nce")
    taus = {}
    for method in methods:
        per_target = {}
        for target, *_ in targets:
            scored = [r for r in rows if r["target"] == target and method in r]
            if len(scored) >= 2:
                tau = kendalltau([r[method] for r in scored], [r["probe_accuracy"] for r in scored])
                per_target[target] = {"tau": float(tau.statistic), "candidates": len(scored)}
        scored = [r for r in rows if method in r]
        pooled = kendalltau([r[method] for r in scored], [r["probe_accuracy"] for r in scored])
        taus[method] = {
            "per_target": per_target,
            "pooled": float(pooled.statistic),
            "mean_per_target": statistics.mean(t["tau"] for t in per_target.values()),
        }
    return {"rows": rows, "kendall_tau": taus, "rank_backbones": _rank_backbones(extractors, args)}


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
    rows = []
    for dataset, kind, candidate, train_count, test_count, num_classes in settings:
        extractor = extractors[kind, False]
        train, y_train, x_train = extractor.get(dataset, "train", train_count)
        test, y_test, x_test = extractor.get(dataset, "test", test_count)
        features, test_features = train[candidate], test[candidate]
        smallest = int(np.bincount(y_train).min())
        for shots in args.shots:
            if shots + 1 > smallest:  # The episodes draw one (unused) query too.
                log(f"few-shot {dataset}: skip {shots} shots, smallest class in pool: {smallest}")
                continue
            episodes = kt.few_shot_episodes(
                np.arange(len(y_train)), y_train, shots, queries=1, episodes=args.episodes
            )
            results = {"prototype": [], "linear_probe": []}
            if args.scratch and kind == "image":
                results["scratch_cnn"] = []
            for index, episode in enumerate(episodes):
                support, labels = features[episode.x_support], episode.y_support
                results["prototype"].append(
                    prototype_accuracy(support, labels, test_features, y_test, num_classes)
                )
                results["linear_probe"].append(linear_probe(support, labels, test_features, y_test))
                if "scratch_cnn" in results:
                    results["scratch_cnn"].append(
                        scratch_accuracy(
                            x_train[episode.x_support], labels, x_test, y_test, num_classes, index
                        )
                    )
            for method, accuracies in results.items():
                rows.append(
                    {
                        "dataset": dataset,
                        "features": candidate if method != "scratch_cnn" else "raw pixels",
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
    header = ["target", "candidate", "LogME", "s", "H-score", "s", "LEEP", "NCE", "probe acc %"]
    lines = [header]
    for row in result["rows"]:
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
    text += "\n"
    tau_lines = [
        [
            "score",
            *[t for t in result["kendall_tau"]["logme"]["per_target"]],
            "pooled",
            "mean per target",
        ]
    ]
    for method, tau in result["kendall_tau"].items():
        tau_lines.append(
            [method]
            + [
                f"{tau['per_target'][t]['tau']:+.2f} (n={tau['per_target'][t]['candidates']})"
                if t in tau["per_target"]
                else "-"
                for t in tau_lines[0][1:-2]
            ]
            + [f"{tau['pooled']:+.2f}", f"{tau['mean_per_target']:+.2f}"]
        )
    check = result["rank_backbones"]
    return (
        text
        + "Kendall's tau, score vs linear-probe accuracy:\n"
        + _table(tau_lines)
        + f"\n\nkt.rank_backbones on {check['examples']} movie sentences: LogME "
        + f"{check['logme']:.4f} (this script's layer 6: {check['benchmark_logme']:.4f}), "
        + f"random twin {check['random_logme']:.4f} ({check['benchmark_random_logme']:.4f}), "
        + f"{check['seconds']:.1f} s"
    )


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
    keys = [k for k in ("logme", "h_score", "leep", "nce", "probe_accuracy") if k in row]
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
    parser.add_argument("--scratch", action="store_true", help="few-shot: add a CNN from scratch")
    parser.add_argument("--zero-shot-test", type=int, default=2000, help="test sentences/domain")
    parser.add_argument("--pool", type=int, default=200, help="5-shot support pool per domain")
    parser.add_argument(
        "--rank-examples", type=int, default=256, help="kt.rank_backbones cross-check sentences"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="examples per backbone pass")
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
