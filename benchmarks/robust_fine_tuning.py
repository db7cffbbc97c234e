"""Fine-tuning that keeps what the backbone knew: L2-SP, EWC, WiSE-FT and soups, measured.

Four parts, each in one process on one backend (`KERAS_BACKEND`), seeds in turn:

`--part ood`: MiniLM-L6 fine-tuned on VADER movie reviews with
    `benchmarks/transfer_accuracy.py`'s text recipe (a head on the frozen
    encoder through `kt.FeatureCache`, then `{0: 2, 1: 5, 2: "all"}` with
    `kt.DiscriminativeLR`, AdamW, warm-up + cosine; here the stages run with
    `cache_frozen=True`), scored in distribution (the movies test split) and out
    of distribution (the amazon, nyt and tweets test splits; their mean):
    - the linear probe (the head on the frozen encoder);
    - plain fine-tuning from the probe;
    - fine-tuning from the probe with `kt.L2SP` (anchored at the pretrained
      encoder, the head decayed; AdamW's weight decay off, as L2-SP replaces it);
    - `kt.wise_ft(probe, fine_tuned, alpha)` along `--alphas`.
    `--plot` draws in-distribution against out-of-distribution accuracy along
    alpha (the WiSE-FT paper's figure), seeds averaged.

`--part forgetting`: sequential transfer. The movies model of the recipe above,
    then `--second-epochs` of Adam on the tweets training split, every layer
    trainable: with no protection, with `kt.EWC` at each of `--ewc-strengths`
    (one Fisher, `kt.fisher_information` on `--ewc-samples` movie training
    sentences) and with `kt.L2SP` anchored at the movies model at each of
    `--forgetting-alphas` (`groups=[]`: the head is not new). Movies test
    accuracy before and after, tweets test accuracy after.

`--part images`: EfficientNet-Lite0 on `--image-train` Fashion-MNIST images at
    `--image-size` px, `transfer_accuracy.py`'s image recipe: plain fine-tuning
    against fine-tuning with `kt.L2SP` (weight decay off).

`--part soups`: one linear probe (the first seed), then one fine-tune per
    `--soup-lrs` rate (each with its own shuffling seed) from it; the best single
    model, `kt.average_weights` (uniform soup) and `kt.greedy_soup` (held-out
    movie training sentences as validation), scored as in `ood`.

Data: the first `--max-train` movie training sentences (default all 8,455);
`--max-test` caps every test split (default: all; movies 2,113, amazon 722,
nyt 989, tweets 839).

Usage:

    KERAS_BACKEND=tensorflow python benchmarks/robust_fine_tuning.py --part ood \\
        --json results/robust_ood.json --plot results/robust_ood.png
    KERAS_BACKEND=tensorflow python benchmarks/robust_fine_tuning.py --part forgetting
    KERAS_BACKEND=tensorflow python benchmarks/robust_fine_tuning.py --part images
    KERAS_BACKEND=tensorflow python benchmarks/robust_fine_tuning.py --part soups
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import keras
import numpy as np
from feature_cache import BertInputs, MaskedMeanPooling, text_encoder, tokenize
from transfer_accuracy import (
    HEAD_LR,
    WEIGHT_DECAY,
    classifier,
    compile_model,
    groups_that_train,
    image_encoder,
    warmup_cosine,
)

import keras_transfer as kt

SCHEDULE = {0: 2, 1: 5, 2: "all"}
OOD_DOMAINS = ("amazon", "nyt", "tweets")
# wise_ft and the soups rebuild models from their configs.
keras.saving.get_custom_objects().update(
    {"BertInputs": BertInputs, "MaskedMeanPooling": MaskedMeanPooling}
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def seeds(args) -> range:
    return range(args.first_seed, args.first_seed + args.seeds)


def mean_std(values) -> dict:
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std, "values": values}


# --- models and training ----------------------------------------------------------


def text_model(args, seed: int) -> keras.Model:
    """A fresh MiniLM-L6 classifier (the pretrained weights loaded again)."""
    keras.utils.set_random_seed(seed)
    encoder = text_encoder(kt.load_backbone("minilm_l6"), args.seq_len, inference_only=False)
    return classifier(encoder, (args.seq_len,), "int32", 2, seed)


def image_model(args, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    encoder = image_encoder(kt.load_backbone("efficientnet_lite0_imagenet"), args.image_size)
    return classifier(encoder, (28, 28, 1), "float32", 10, seed)


def linear_probe(model, x, y, args, seed: int) -> None:
    """Trains the head on the frozen encoder's cached features."""
    encoder = model.layers[0]
    encoder.trainable = False
    compile_model(model, keras.optimizers.Adam(HEAD_LR))
    keras.utils.set_random_seed(seed)
    kt.FeatureCache(model, batch_size=args.batch_size).fit(
        x, y, epochs=args.head_epochs, batch_size=args.batch_size, verbose=0
    )
    encoder.trainable = True


def fine_tune(model, x, y, args, seed: int, lr: float, decay: float, l2sp: bool) -> dict:
    """The recipe's gradual unfreezing with discriminative rates; with `l2sp`,
    an `L2SP` penalty replaces AdamW's weight decay."""
    plan = groups_that_train(model)
    penalty = kt.L2SP(plan, alpha=args.alpha, beta=args.beta) if l2sp else None
    total_steps = args.epochs * -(-len(y) // args.batch_size)
    adamw = keras.optimizers.AdamW(
        warmup_cosine(lr, total_steps), weight_decay=0.0 if l2sp else WEIGHT_DECAY
    )
    compile_model(model, kt.DiscriminativeLR(adamw, plan, decay=decay))
    schedule = kt.FreezeSchedule(plan, SCHEDULE, cache_frozen=True, verbose=0)
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    history = schedule.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
    logs = {name: [float(v) for v in values] for name, values in history.history.items()}
    if penalty is not None:
        penalty.remove()
    return {"seconds": time.perf_counter() - start, "logs": logs}


def accuracy(model, x, y) -> float:
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def text_scores(model, tests) -> dict:
    """Accuracy on each test split, and the out-of-distribution mean."""
    scores = {domain: accuracy(model, x, y) for domain, (x, y) in tests.items()}
    scores["ood_mean"] = statistics.mean(scores[domain] for domain in OOD_DOMAINS)
    return scores


def copy_model(model, args, seed: int) -> keras.Model:
    copy = text_model(args, seed)
    copy.set_weights(model.get_weights())
    return copy


# --- data ------------------------------------------------------------------------


def text_data(args):
    tests = {}
    for domain in ("movies", *OOD_DOMAINS):
        (x, y), (x_test, y_test) = kt.datasets.load_vader(domain)
        tests[domain] = (tokenize(x_test[: args.max_test], args.seq_len), y_test[: args.max_test])
        if domain == "movies":
            train = (tokenize(x[: args.max_train], args.seq_len), y[: args.max_train])
            held_out = (tokenize(x[-args.validation :], args.seq_len), y[-args.validation :])
    return train, held_out, tests


# --- parts -------------------------------------------------------------------------


def ood_part(args) -> dict:
    (x, y), _, tests = text_data(args)
    log(f"ood: {len(y)} training sentences; tests { ({d: len(t[1]) for d, t in tests.items()}) }")
    runs = []
    for seed in seeds(args):
        model = text_model(args, seed)
        linear_probe(model, x, y, args, seed)
        probe = copy_model(model, args, seed)
        run = {"seed": seed, "probe": text_scores(probe, tests)}
        log(f"seed {seed}: probe {run['probe']}")
        run["l2sp_training"] = fine_tune(model, x, y, args, seed, args.lr, args.decay, True)
        run["l2sp"] = text_scores(model, tests)
        log(f"seed {seed}: l2sp {run['l2sp']}")
        model.set_weights(probe.get_weights())
        run["plain_training"] = fine_tune(model, x, y, args, seed, args.lr, args.decay, False)
        run["wise_ft"] = {}
        for alpha in args.alphas:
            if alpha in (0.0, 1.0):  # The probe's and the fine-tuned model's own weights.
                run["wise_ft"][str(alpha)] = (
                    run["probe"] if alpha == 0.0 else text_scores(model, tests)
                )
            else:
                run["wise_ft"][str(alpha)] = text_scores(kt.wise_ft(probe, model, alpha), tests)
            log(f"seed {seed}: wise_ft alpha {alpha} {run['wise_ft'][str(alpha)]}")
        runs.append(run)
    return {"runs": runs, "summary": summarise_ood(runs, args.alphas)}


def summarise_ood(runs, alphas) -> dict:
    def both(key_of):
        return {
            score: mean_std(key_of(run)[score] for run in runs) for score in ("movies", "ood_mean")
        }

    summary = {
        "probe": both(lambda run: run["probe"]),
        "l2sp": both(lambda run: run["l2sp"]),
    }
    for alpha in alphas:
        summary[f"wise_ft_{alpha}"] = both(lambda run, a=alpha: run["wise_ft"][str(a)])
    return summary


def plot_ood(summary, alphas, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    movies = [100 * summary[f"wise_ft_{a}"]["movies"]["mean"] for a in alphas]
    ood = [100 * summary[f"wise_ft_{a}"]["ood_mean"]["mean"] for a in alphas]
    axes.plot(movies, ood, "o-", label="WiSE-FT, alpha from the probe (0) to fine-tuned (1)")
    for alpha, x_value, y_value in zip(alphas, movies, ood):
        axes.annotate(f"{alpha:g}", (x_value, y_value), textcoords="offset points", xytext=(5, 5))
    l2sp = summary["l2sp"]
    axes.plot(
        100 * l2sp["movies"]["mean"], 100 * l2sp["ood_mean"]["mean"], "s", label="L2-SP fine-tuned"
    )
    axes.set_xlabel("in distribution: movies test accuracy (%)")
    axes.set_ylabel("out of distribution: mean of amazon, nyt, tweets (%)")
    axes.set_title("MiniLM-L6 fine-tuned on VADER movies")
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    log(f"plot written to {path}")


def forgetting_part(args) -> dict:
    (x, y), _, tests = text_data(args)
    (x_tweets_text, y_tweets), _ = kt.datasets.load_vader("tweets")
    x_tweets = tokenize(x_tweets_text[: args.max_train], args.seq_len)
    y_tweets = y_tweets[: args.max_train]
    runs = []
    for seed in seeds(args):
        model = text_model(args, seed)
        linear_probe(model, x, y, args, seed)
        fine_tune(model, x, y, args, seed, args.lr, args.decay, False)
        movies_weights = model.get_weights()
        run = {"seed": seed, "after_movies": text_scores(model, tests)}
        log(f"seed {seed}: after movies {run['after_movies']}")
        fisher_start = time.perf_counter()
        compile_model(model, keras.optimizers.Adam(args.second_lr))
        fisher = kt.fisher_information(model, (x, y), samples=args.ewc_samples, verbose=0)
        run["fisher_s"] = time.perf_counter() - fisher_start
        run["fisher_mean"] = float(np.mean(np.concatenate([f.ravel() for f in fisher.values()])))
        log(f"seed {seed}: Fisher in {run['fisher_s']:.0f} s, mean {run['fisher_mean']:.3g}")
        for arm in forgetting_arms(args):
            model.set_weights(movies_weights)
            compile_model(model, keras.optimizers.Adam(args.second_lr))
            kind, _, strength = arm.partition("_")
            penalty = None
            if kind == "ewc":
                penalty = kt.EWC(model, fisher, strength=float(strength), verbose=0)
            elif kind == "l2sp":
                penalty = kt.L2SP(model, alpha=float(strength), beta=0.0, groups=[])
            keras.utils.set_random_seed(seed)
            model.fit(
                x_tweets,
                y_tweets,
                epochs=args.second_epochs,
                batch_size=args.batch_size,
                verbose=0,
            )
            if penalty is not None:
                penalty.remove()
            run[arm] = text_scores(model, tests)
            log(f"seed {seed}: after tweets, {arm}: {run[arm]}")
        runs.append(run)
    summary = {}
    for arm in ("after_movies", *forgetting_arms(args)):
        summary[arm] = {
            score: mean_std(run[arm][score] for run in runs) for score in ("movies", "tweets")
        }
    return {"runs": runs, "summary": summary}


def forgetting_arms(args) -> list[str]:
    ewc = [f"ewc_{strength:g}" for strength in args.ewc_strengths]
    return ["none", *ewc, *(f"l2sp_{alpha:g}" for alpha in args.forgetting_alphas)]


def images_part(args) -> dict:
    (x, y), (x_test, y_test) = kt.datasets.load_fashion_mnist()
    x, y = x[: args.image_train], y[: args.image_train]
    x_test, y_test = x_test[: args.max_test], y_test[: args.max_test]
    runs = []
    for seed in seeds(args):
        model = image_model(args, seed)
        linear_probe(model, x, y, args, seed)
        probe_weights = model.get_weights()
        run = {"seed": seed, "probe": accuracy(model, x_test, y_test)}
        for arm in ("plain", "l2sp"):
            model.set_weights(probe_weights)
            training = fine_tune(
                model, x, y, args, seed, args.image_lr, args.image_decay, arm == "l2sp"
            )
            run[arm] = accuracy(model, x_test, y_test)
            run[f"{arm}_training"] = training
            log(f"seed {seed}: {arm} {run[arm]:.4f} ({training['seconds']:.0f} s)")
        runs.append(run)
    summary = {arm: mean_std(run[arm] for run in runs) for arm in ("probe", "plain", "l2sp")}
    return {"runs": runs, "summary": summary}


def soups_part(args) -> dict:
    (x, y), held_out, tests = text_data(args)
    model = text_model(args, 0)
    linear_probe(model, x, y, args, 0)
    probe_weights = model.get_weights()
    ingredients, singles = [], []
    for index, lr in enumerate(args.soup_lrs):
        model.set_weights(probe_weights)
        fine_tune(model, x, y, args, 100 + index, lr, args.decay, False)
        ingredients.append(copy_model(model, args, 0))
        singles.append(
            {"lr": lr, "held_out": accuracy(model, *held_out), **text_scores(model, tests)}
        )
        log(f"ingredient {index} (lr {lr}): {singles[-1]}")
    best = max(range(len(singles)), key=lambda index: singles[index]["held_out"])
    uniform = kt.average_weights(ingredients)
    greedy = kt.greedy_soup(ingredients, held_out, batch_size=256)
    result = {
        "ingredients": singles,
        "best_single": {"index": best, **singles[best]},
        "uniform_soup": {"held_out": accuracy(uniform, *held_out), **text_scores(uniform, tests)},
        "greedy_soup": {
            "kept": list(greedy.greedy_soup_info.kept),
            "held_out": accuracy(greedy, *held_out),
            **text_scores(greedy, tests),
        },
    }
    for name in ("best_single", "uniform_soup", "greedy_soup"):
        log(f"{name}: {result[name]}")
    return result


PARTS = {"ood": ood_part, "forgetting": forgetting_part, "images": images_part, "soups": soups_part}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=tuple(PARTS), default="ood")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from this one")
    parser.add_argument("--max-train", type=int, default=None, help="movie training sentences")
    parser.add_argument("--max-test", type=int, default=None, help="cap on every test split")
    parser.add_argument("--validation", type=int, default=500, help="soups: held-out sentences")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--head-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (one a stage)")
    parser.add_argument("--lr", type=float, default=1e-4, help="text: peak rate, top group")
    parser.add_argument("--decay", type=float, default=1.2, help="text: rate ratio per group")
    parser.add_argument("--alpha", type=float, default=0.01, help="L2SP pull to the start")
    parser.add_argument("--beta", type=float, default=0.01, help="L2SP head weight decay")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--second-epochs", type=int, default=2, help="forgetting: tweets epochs")
    parser.add_argument("--second-lr", type=float, default=5e-5, help="forgetting: Adam rate")
    parser.add_argument("--ewc-strengths", type=float, nargs="+", default=[1e3, 1e4])
    parser.add_argument("--ewc-samples", type=int, default=512)
    parser.add_argument(
        "--forgetting-alphas", type=float, nargs="+", default=[0.1, 1.0], help="L2SP at movies"
    )
    parser.add_argument("--image-train", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--image-lr", type=float, default=1e-3)
    parser.add_argument("--image-decay", type=float, default=1.5)
    parser.add_argument("--soup-lrs", type=float, nargs="+", default=[5e-5, 1e-4, 1e-4, 2e-4])
    parser.add_argument("--plot", help="ood: write the in/out-of-distribution plot here")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.part == "ood" and args.alphas[0] != 0.0:
        raise SystemExit("--alphas must start at 0 (the linear probe) for the plot")
    started = time.perf_counter()
    result = {
        "backend": keras.backend.backend(),
        "versions": {"keras": keras.__version__},
        "settings": vars(args),
        args.part: PARTS[args.part](args),
    }
    result["seconds"] = time.perf_counter() - started
    if args.part == "ood":
        summary = result["ood"]["summary"]
        for name, scores in summary.items():
            log(
                f"{name}: movies {100 * scores['movies']['mean']:.2f} ± "
                f"{100 * scores['movies']['std']:.2f}, ood {100 * scores['ood_mean']['mean']:.2f}"
                f" ± {100 * scores['ood_mean']['std']:.2f}"
            )
        if args.plot:
            plot_ood(summary, args.alphas, args.plot)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
