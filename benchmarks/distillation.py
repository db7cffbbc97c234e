"""`kt.DistillationModel`: what distillation buys a small student, and what the cache saves.

Three parts (`--part vision|text|speed|all`):

- vision: a CNN teacher trained on Fashion-MNIST (`kt.datasets.load_fashion_mnist`,
  the first `--vision-train` training images, `--teacher-epochs` epochs) and a
  small MLP student (Flatten, Dense(`--student-units`), Dense(10)). For each
  seed the same student is trained on the labels alone and distilled (labels
  plus the teacher's soft targets, the teacher's logits cached once by
  `kt.cache_teacher_outputs`), with the same initial weights, epochs and
  optimizer. Reports test accuracy and errors on all 10,000 test images, mean
  and spread over seeds, and the fraction of the teacher-student gap that
  distillation recovers: (distilled - labels only) / (teacher - labels only).
  `--vision-transfer N` adds a third arm, Hinton et al.'s transfer set: pure
  distillation (`fit(x)` without labels, soft targets only) over the first N
  training images, the labelled ones and the unlabelled rest.
- text: the teacher is the real MiniLM-L6 (`kt.load_backbone("minilm_l6")`,
  frozen, mean-pooled) with a Dense(2) head trained through `kt.FeatureCache` on
  the first `--text-train` VADER movie sentences (`kt.datasets.load_vader`); it
  reads MiniLM token ids. The student is an embedding bag (Embedding,
  GlobalAveragePooling1D, Dense(2)) over its own word vocabulary (a Keras
  `TextVectorization` fitted on the training sentences): different inputs, which
  `keras.distillation.Distiller` cannot take. Batches are dicts
  `{"minilm_ids": ..., "word_ids": ...}` and `teacher_inputs="minilm_ids"`.
  Labels alone vs distilled, per seed, on all 2,113 test sentences.
  `--text-teacher-weights` makes the teacher a fine-tuned MiniLM classifier
  (saved by `progressive_cache.py --part recipe --save-weights`);
  `--text-transfer-domains amazon,nyt,tweets` adds a pure-distillation arm over
  the labelled sentences and those domains' sentences, labels unused (the
  student's vocabulary is fitted on all of them, for every arm).
- speed: epoch times of `keras.distillation.Distiller` (teacher on every batch)
  against `kt.DistillationModel` with a live teacher and with
  `kt.cache_teacher_outputs`, on the same MiniLM teacher and the same student
  (an embedding bag over MiniLM token ids, since `Distiller` needs the teacher's
  inputs), in one process. `Distiller` is given
  `LogitsDistillation(loss=keras.losses.KLDivergence())`, the instance that
  takes its softmax path (its default string loss skips the softmax).

Usage (KERAS_BACKEND selects the backend):

    KERAS_BACKEND=tensorflow python benchmarks/distillation.py --part all --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import keras
import numpy as np
from feature_cache import text_encoder, tokenize
from transfer_accuracy import classifier

import keras_transfer as kt
from keras_transfer.distillation import DistillationModel, cache_teacher_outputs

# Chosen on held-out training images 50,000-59,999 (one seed, student 32 or
# 128 units, 10 or 20 epochs, T in {2, 4}, distillation weight in {0.5, 0.9});
# not on test.
TEMPERATURE = 2.0
DISTILLATION_WEIGHT = 0.5


def sparse_cce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def accuracy(model, x, y, batch_size=256) -> float:
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def summary(values) -> dict:
    return {
        "each": values,
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def compare_students(
    make_student, teacher, x, y, x_test, y_test, args, teacher_inputs=None, transfer_x=None
):
    """Labels alone vs distilled, per seed; the teacher's outputs cached once.

    With `transfer_x`, a third arm: pure distillation (no labels, the
    teacher's soft targets alone) over the unlabelled transfer set, the
    teacher's outputs on it cached once too.
    """
    probe = DistillationModel(
        teacher,
        make_student(),
        temperature=TEMPERATURE,
        distillation_weight=DISTILLATION_WEIGHT,
        teacher_inputs=teacher_inputs,
    )
    start = time.perf_counter()
    cached_x, targets = cache_teacher_outputs(probe, x, y, batch_size=args.batch_size)
    cache_s = time.perf_counter() - start
    transfer_cache = None
    if transfer_x is not None:
        pure = DistillationModel(
            teacher, make_student(), temperature=TEMPERATURE, teacher_inputs=teacher_inputs
        )
        transfer_cache = cache_teacher_outputs(pure, transfer_x, batch_size=args.batch_size)
    results = {"labels_only": [], "distilled": []}
    student_x_test = probe.student_view(x_test)
    for seed in range(args.seeds):
        keras.utils.set_random_seed(seed)
        student = make_student()
        initial = student.get_weights()
        student.compile(keras.optimizers.Adam(args.learning_rate), sparse_cce())
        student.fit(
            probe.student_view(x),
            y,
            epochs=args.student_epochs,
            batch_size=args.batch_size,
            verbose=0,
        )
        results["labels_only"].append(accuracy(student, student_x_test, y_test))
        keras.utils.set_random_seed(seed)
        student = make_student()
        student.set_weights(initial)
        model = DistillationModel(
            teacher,
            student,
            temperature=TEMPERATURE,
            distillation_weight=DISTILLATION_WEIGHT,
            teacher_inputs=teacher_inputs,
        )
        model.compile(keras.optimizers.Adam(args.learning_rate), sparse_cce())
        model.fit(
            cached_x, targets, epochs=args.student_epochs, batch_size=args.batch_size, verbose=0
        )
        results["distilled"].append(accuracy(student, student_x_test, y_test))
        if transfer_x is not None:
            keras.utils.set_random_seed(seed)
            student = make_student()
            student.set_weights(initial)
            model = DistillationModel(
                teacher, student, temperature=TEMPERATURE, teacher_inputs=teacher_inputs
            )
            model.compile(keras.optimizers.Adam(args.learning_rate))
            model.fit(
                transfer_cache[0],
                transfer_cache[1],
                epochs=args.student_epochs,
                batch_size=args.batch_size,
                verbose=0,
            )
            results.setdefault("distilled_transfer_set", []).append(
                accuracy(student, student_x_test, y_test)
            )
        print(f"  seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in results.items()))
    return {key: summary(values) for key, values in results.items()}, cache_s


def gap_recovered(teacher_accuracy, students, arm: str = "distilled") -> float:
    baseline = students["labels_only"]["mean"]
    return (students[arm]["mean"] - baseline) / (teacher_accuracy - baseline)


def run_vision(args) -> dict:
    (x_train, y_train), (x_test, y_test) = kt.datasets.load_fashion_mnist()
    x, y = x_train[: args.vision_train], y_train[: args.vision_train]
    keras.utils.set_random_seed(1000)
    teacher = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="teacher_cnn",
    )
    teacher.compile(keras.optimizers.Adam(1e-3), sparse_cce())
    start = time.perf_counter()
    teacher.fit(x, y, epochs=args.teacher_epochs, batch_size=64, verbose=0)
    teacher_s = time.perf_counter() - start
    teacher.trainable = False
    teacher_accuracy = accuracy(teacher, x_test, y_test)
    print(f"vision teacher: {teacher_accuracy:.4f} ({teacher_s:.0f} s)", flush=True)

    def make_student():
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Flatten(),
                keras.layers.Dense(args.student_units, activation="relu"),
                keras.layers.Dense(10),
            ],
            name="student_mlp",
        )

    # Hinton et al.'s students learned from a transfer set larger than the
    # labelled one: the unlabelled rest of the training images.
    transfer_x = x_train[: args.vision_transfer] if args.vision_transfer else None
    students, cache_s = compare_students(
        make_student, teacher, x, y, x_test, y_test, args, transfer_x=transfer_x
    )
    return {
        "teacher_accuracy": teacher_accuracy,
        "teacher_test_errors": round((1 - teacher_accuracy) * len(y_test)),
        "students": students,
        "student_test_errors": {
            key: round((1 - value["mean"]) * len(y_test)) for key, value in students.items()
        },
        "gap_recovered": gap_recovered(teacher_accuracy, students),
        "gap_recovered_transfer_set": (
            gap_recovered(teacher_accuracy, students, "distilled_transfer_set")
            if transfer_x is not None
            else None
        ),
        "num_transfer": 0 if transfer_x is None else len(transfer_x),
        "teacher_train_s": teacher_s,
        "cache_s": cache_s,
        "num_train": len(y),
        "num_test": len(y_test),
    }


def minilm_teacher(x_ids, y, args):
    """Frozen MiniLM + Dense(2) head trained through FeatureCache; reads token ids."""
    backbone = kt.load_backbone("minilm_l6")
    backbone.trainable = False
    encoder = text_encoder(backbone, args.seq_len, inference_only=True)
    keras.utils.set_random_seed(1000)
    teacher = keras.Sequential(
        [keras.Input((args.seq_len,), dtype="int32"), encoder, keras.layers.Dense(2, name="head")],
        name="minilm_teacher",
    )
    teacher.compile(keras.optimizers.Adam(1e-3), sparse_cce(), metrics=["accuracy"])
    cache = kt.FeatureCache(teacher, batch_size=args.batch_size)
    cache.fit(x_ids, y, epochs=args.teacher_head_epochs, batch_size=32, verbose=0)
    teacher.trainable = False
    return teacher, cache


def finetuned_minilm_teacher(args):
    """A fine-tuned MiniLM classifier (`transfer_accuracy.py`'s text model)
    with the weights in `--text-teacher-weights`; reads token ids."""
    backbone = kt.load_backbone("minilm_l6")
    encoder = text_encoder(backbone, args.seq_len, inference_only=False)
    teacher = classifier(encoder, (args.seq_len,), "int32", 2)
    teacher.load_weights(args.text_teacher_weights)
    teacher.trainable = False
    return teacher


def transfer_sentences(args) -> list:
    """Sentences of the other VADER domains (`--text-transfer-domains`),
    training and test splits, labels dropped: the unlabelled transfer set."""
    sentences = []
    for domain in args.text_transfer_domains.split(","):
        (x_train, _), (x_test, _) = kt.datasets.load_vader(domain.strip())
        sentences.extend(list(x_train) + list(x_test))
    return sentences[: args.text_transfer_max]


def run_text(args, texts) -> dict:
    (x_train, y_train), (x_test, y_test), ids, ids_test = texts
    x, y = x_train[: args.text_train], y_train[: args.text_train]
    start = time.perf_counter()
    if args.text_teacher_weights:
        teacher = finetuned_minilm_teacher(args)
        teacher_accuracy = accuracy(teacher, ids_test, y_test)
    else:
        teacher, cache = minilm_teacher(ids[: args.text_train], y, args)
        features, _ = cache.extract(ids_test, y_test)
        teacher_logits = keras.ops.convert_to_numpy(teacher.get_layer("head")(features))
        teacher_accuracy = float(np.mean(np.argmax(teacher_logits, -1) == y_test))
    teacher_s = time.perf_counter() - start
    print(f"text teacher: {teacher_accuracy:.4f} ({teacher_s:.0f} s)", flush=True)
    extra = transfer_sentences(args) if args.text_transfer_domains else []

    vectorizer = keras.layers.TextVectorization(
        max_tokens=args.vocabulary, output_sequence_length=args.seq_len
    )
    # Unlabelled sentences may shape the vocabulary: every arm gets the same one.
    vectorizer.adapt(np.concatenate([np.asarray(x, dtype=object), np.asarray(extra, dtype=object)]))

    def word_ids(sentences):
        return keras.ops.convert_to_numpy(vectorizer(sentences)).astype("int32")

    def make_student():
        return keras.Sequential(
            [
                keras.Input((args.seq_len,), dtype="int32"),
                keras.layers.Embedding(args.vocabulary, 64, mask_zero=True),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(2),
            ],
            name="embedding_bag",
        )

    batch = {"minilm_ids": ids[: args.text_train], "word_ids": word_ids(x)}
    batch_test = {"word_ids": word_ids(x_test)}
    transfer = None
    if extra:
        # The labelled sentences first, their ids as already tokenised.
        transfer = {
            "minilm_ids": np.concatenate([batch["minilm_ids"], tokenize(extra, args.seq_len)]),
            "word_ids": np.concatenate([batch["word_ids"], word_ids(extra)]),
        }
        # A sentence with no word in the student's vocabulary (a tweet of
        # emoticons) is all padding: its masked average is 0 / 0, a NaN that
        # would poison the student. The student cannot read those; drop them.
        readable = transfer["word_ids"].any(axis=1)
        transfer = {key: value[readable] for key, value in transfer.items()}
    students, cache_s = compare_students(
        make_student,
        teacher,
        batch,
        y,
        batch_test,
        y_test,
        args,
        teacher_inputs="minilm_ids",
        transfer_x=transfer,
    )
    return {
        "teacher": "fine-tuned" if args.text_teacher_weights else "frozen encoder + head",
        "teacher_accuracy": teacher_accuracy,
        "students": students,
        "gap_recovered": gap_recovered(teacher_accuracy, students),
        "gap_recovered_transfer_set": (
            gap_recovered(teacher_accuracy, students, "distilled_transfer_set") if extra else None
        ),
        "num_transfer": 0 if transfer is None else len(transfer["word_ids"]),
        "teacher_train_s": teacher_s,
        "cache_s": cache_s,
        "num_train": len(y),
        "num_test": len(y_test),
    }, teacher


class EpochTimer(keras.callbacks.Callback):
    """Wall and process-CPU seconds of each epoch (CPU is steadier on a shared machine)."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = self._start
        self.seconds.append(
            {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        )


def run_speed(args, texts, teacher) -> dict:
    (_, y_train), _, ids, _ = texts
    x, y = ids[: args.speed_samples], y_train[: args.speed_samples]

    def make_student():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((args.seq_len,), dtype="int32"),
                keras.layers.Embedding(30522, 32, mask_zero=True),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(2),
            ],
            name="student_on_minilm_ids",
        )

    def timed_fit(model, *data):
        model.compile(keras.optimizers.Adam(1e-3), sparse_cce())
        timer = EpochTimer()
        model.fit(
            *data,
            epochs=args.speed_epochs,
            batch_size=args.batch_size,
            verbose=0,
            callbacks=[timer],
        )
        return timer.seconds

    distiller = keras.distillation.Distiller(
        teacher,
        make_student(),
        keras.distillation.LogitsDistillation(TEMPERATURE, loss=keras.losses.KLDivergence()),
        student_loss_weight=1 - DISTILLATION_WEIGHT,
    )
    results = {"keras_distiller": timed_fit(distiller, x, y)}
    print(f"speed: Distiller epochs {results['keras_distiller']}", flush=True)
    live = DistillationModel(
        teacher,
        make_student(),
        temperature=TEMPERATURE,
        distillation_weight=DISTILLATION_WEIGHT,
    )
    results["distillation_model_live"] = timed_fit(live, x, y)
    print(f"speed: live teacher epochs {results['distillation_model_live']}", flush=True)
    cached = DistillationModel(
        teacher,
        make_student(),
        temperature=TEMPERATURE,
        distillation_weight=DISTILLATION_WEIGHT,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    cached_data = cache_teacher_outputs(cached, x, y, batch_size=args.batch_size)
    results["cache_pass"] = {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
    }
    results["distillation_model_cached"] = timed_fit(cached, *cached_data)
    print(f"speed: cache {results['cache_pass']}, epochs {results['distillation_model_cached']}")
    for clock in ("wall_s", "cpu_s"):
        # Steady-state epochs: the first one includes tracing.
        distiller_epoch = statistics.mean(e[clock] for e in results["keras_distiller"][1:])
        cached_epoch = statistics.mean(e[clock] for e in results["distillation_model_cached"][1:])
        results[f"epoch_ratio_{clock}"] = distiller_epoch / cached_epoch
        results[f"total_ratio_{clock}"] = sum(e[clock] for e in results["keras_distiller"]) / (
            results["cache_pass"][clock]
            + sum(e[clock] for e in results["distillation_model_cached"])
        )
    results["samples"] = len(y)
    results["epochs"] = args.speed_epochs
    return results


def load_texts(args):
    (x_train, y_train), (x_test, y_test) = kt.datasets.load_vader("movies")
    count = max(args.text_train, args.speed_samples)
    ids = tokenize(x_train[:count], args.seq_len)
    ids_test = tokenize(x_test, args.seq_len)
    return (x_train, y_train), (x_test, y_test), ids, ids_test


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["vision", "text", "speed", "all"], default="all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--student-epochs", type=int, default=20)
    parser.add_argument("--vision-train", type=int, default=20000)
    parser.add_argument(
        "--vision-transfer",
        type=int,
        default=0,
        help="training images (labels unused) for a pure-distillation arm; 0: no such arm",
    )
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--student-units", type=int, default=128)
    parser.add_argument("--text-train", type=int, default=2048)
    parser.add_argument("--teacher-head-epochs", type=int, default=10)
    parser.add_argument(
        "--text-teacher-weights",
        help="a fine-tuned MiniLM teacher's `.weights.h5` (progressive_cache.py --save-weights); "
        "default: the frozen encoder with a head trained here",
    )
    parser.add_argument(
        "--text-transfer-domains",
        default="",
        help="comma-separated VADER domains whose sentences (labels unused) join the labelled "
        "ones in a pure-distillation arm, e.g. amazon,nyt,tweets",
    )
    parser.add_argument(
        "--text-transfer-max", type=int, default=None, help="cap on those sentences (default all)"
    )
    parser.add_argument("--vocabulary", type=int, default=10000)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--speed-samples", type=int, default=512)
    parser.add_argument("--speed-epochs", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    result = {
        "backend": keras.backend.backend(),
        "settings": vars(args)
        | {"temperature": TEMPERATURE, "distillation_weight": DISTILLATION_WEIGHT},
    }
    start = time.perf_counter()
    if args.part in ("vision", "all"):
        result["vision"] = run_vision(args)
    if args.part in ("text", "speed", "all"):
        texts = load_texts(args)
        teacher = None
        if args.part in ("text", "all"):
            result["text"], teacher = run_text(args, texts)
        if args.part in ("speed", "all"):
            if teacher is None:
                teacher, _ = minilm_teacher(
                    texts[2][: args.text_train], texts[0][1][: args.text_train], args
                )
            result["speed"] = run_speed(args, texts, teacher)
    result["total_s"] = time.perf_counter() - start
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
