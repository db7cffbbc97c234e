"""Multi-task transfer on four VADER domains: one MiniLM and four heads vs four models vs one head.

Each VADER domain (movies, tweets, amazon, nyt; `kt.datasets.load_vader`) is a
binary sentiment task with its own fixed test split. Three ways to train the
same encoder (`transfer_accuracy.py`'s MiniLM-L6 text encoder, mean-pooled,
with its top `--train-groups` layer groups trainable, counting the head
group, into which BERT's unused pooler is merged as in
`transfer_accuracy.py`) for `--epochs` epochs:

- `multitask`: one `kt.MultiTaskModel(encoder, {domain: Dense(2)})` trained on
  `kt.task_batches` (`--sampling`): one copy of the encoder, four heads;
- `separate`: one classifier per domain, each fine-tuned on its own domain: four
  copies of the encoder;
- `pooled`: one classifier (one head) fine-tuned on all domains mixed.

Every arm starts from the pretrained weights, sees every training sentence once
an epoch, with batch `--batch-size` and AdamW (`--lr`). Reported per seed and as
mean ± std over `--seeds`: test accuracy per domain, parameters to store (the
encoders and heads each arm keeps) and seconds (training and scoring). `--max-train` caps each
domain's training sentences (the small domains are where sharing should help).

Usage (KERAS_BACKEND selects the backend):

    KERAS_BACKEND=jax python benchmarks/multitask.py --json multitask_jax.json
    KERAS_BACKEND=tensorflow python benchmarks/multitask.py --max-train 1000 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import keras
import numpy as np
from feature_cache import text_encoder, tokenize
from transfer_accuracy import WEIGHT_DECAY, classifier, groups_that_train

import keras_transfer as kt

DOMAINS = ("movies", "tweets", "amazon", "nyt")
ARMS = ("multitask", "separate", "pooled")


def load_domains(args) -> dict:
    """`{domain: ((train ids, labels), (test ids, labels))}`."""
    data = {}
    for domain in args.domains.split(","):
        (x_train, y_train), (x_test, y_test) = kt.datasets.load_vader(domain)
        x_train, y_train = x_train[: args.max_train], y_train[: args.max_train]
        x_test, y_test = x_test[: args.max_test], y_test[: args.max_test]
        data[domain] = (
            (tokenize(x_train, args.seq_len), np.asarray(y_train)),
            (tokenize(x_test, args.seq_len), np.asarray(y_test)),
        )
    return data


def new_encoder(args):
    return text_encoder(kt.load_backbone("minilm_l6"), args.seq_len, inference_only=False)


def sparse_cce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def optimizer(args):
    return keras.optimizers.AdamW(args.lr, weight_decay=WEIGHT_DECAY)


def accuracy(model, x, y) -> float:
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def train_classifier(train, args, seed):
    """One encoder + Dense(2), top groups trainable, fit on `(x, y)`."""
    keras.utils.set_random_seed(seed)
    model = classifier(new_encoder(args), (args.seq_len,), "int32", 2)
    kt.freeze(groups_that_train(model), args.train_groups)
    model.compile(optimizer(args), sparse_cce(), metrics=["accuracy"])
    model.fit(*train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)
    return model


def run_multitask(data, args, seed) -> dict:
    keras.utils.set_random_seed(seed)
    heads = {domain: keras.layers.Dense(2, name=f"{domain}_head") for domain in data}
    model = kt.MultiTaskModel(new_encoder(args), heads)
    kt.freeze(groups_that_train(model), args.train_groups)
    model.compile(optimizer(args), loss=sparse_cce(), metrics=["accuracy"])
    stream = kt.task_batches(
        {domain: train for domain, (train, _) in data.items()},
        batch_size=args.batch_size,
        sampling=args.sampling,
        seed=seed,
    )
    model.fit(stream, epochs=args.epochs, verbose=2)
    scores = {
        domain: accuracy(model.task_model(domain), *test) for domain, (_, test) in data.items()
    }
    return {"accuracy": scores, "stored_params": model.count_params()}


def run_separate(data, args, seed) -> dict:
    scores, stored = {}, 0
    for domain, (train, test) in data.items():
        model = train_classifier(train, args, seed)
        scores[domain] = accuracy(model, *test)
        stored += model.count_params()
    return {"accuracy": scores, "stored_params": stored}


def run_pooled(data, args, seed) -> dict:
    x = np.concatenate([train[0] for train, _ in data.values()])
    y = np.concatenate([train[1] for train, _ in data.values()])
    model = train_classifier((x, y), args, seed)
    scores = {domain: accuracy(model, *test) for domain, (_, test) in data.items()}
    return {"accuracy": scores, "stored_params": model.count_params()}


RUNS = {"multitask": run_multitask, "separate": run_separate, "pooled": run_pooled}


def summarise(runs: dict) -> dict:
    """Per arm and domain: accuracy mean ± std over seeds; stored parameters; seconds."""
    summary = {}
    for arm, seeds in runs.items():
        domains = seeds[0]["accuracy"]
        summary[arm] = {
            "accuracy": {
                domain: {
                    "each": [run["accuracy"][domain] for run in seeds],
                    "mean": statistics.mean(run["accuracy"][domain] for run in seeds),
                    "std": statistics.stdev(run["accuracy"][domain] for run in seeds)
                    if len(seeds) > 1
                    else 0.0,
                }
                for domain in domains
            },
            "stored_params": seeds[0]["stored_params"],
            "train_s": [run["train_s"] for run in seeds],
        }
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--domains", default=",".join(DOMAINS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-train", type=int, default=None, help="per domain (all)")
    parser.add_argument("--max-test", type=int, default=None, help="per domain (all)")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-groups", default="3", help="top groups trained, or 'all'")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument(
        "--sampling", choices=("proportional", "uniform", "temperature"), default="proportional"
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.train_groups != "all":
        args.train_groups = int(args.train_groups)
    unknown = sorted(set(args.arms.split(",")) - set(RUNS))
    if unknown:
        parser.error(f"unknown --arms {unknown}; choose from {list(RUNS)}")
    data = load_domains(args)
    sizes = {domain: len(train[1]) for domain, (train, _) in data.items()}
    print(f"training sentences per domain: {sizes}", flush=True)
    runs = {arm: [] for arm in args.arms.split(",")}
    for seed in range(args.seeds):
        for arm in runs:
            start = time.perf_counter()
            run = RUNS[arm](data, args, seed)
            run["train_s"] = time.perf_counter() - start
            runs[arm].append(run)
            scores = ", ".join(f"{d} {a:.4f}" for d, a in run["accuracy"].items())
            print(f"seed {seed} {arm}: {scores} ({run['train_s']:.0f} s)", flush=True)
    result = {
        "backend": keras.backend.backend(),
        "settings": vars(args),
        "train_sizes": sizes,
        "runs": runs,
        "summary": summarise(runs),
    }
    print(json.dumps(result["summary"], indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
