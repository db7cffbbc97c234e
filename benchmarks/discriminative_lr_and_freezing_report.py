"""Statistics, markdown tables and the README section of
`discriminative_lr_and_freezing.py` (kept apart so that each file reads at once)."""

from __future__ import annotations

import datetime
import platform
import re
import statistics
import subprocess
from pathlib import Path

README = Path(__file__).with_name("README.md")
SECTION_TITLE = "## DiscriminativeLR and FreezeSchedule overhead"
COMMAND = "python benchmarks/discriminative_lr_and_freezing.py"
DLR_TARGET = 1.03
FREEZE_TARGET = 1.05


def summary(values: list[float]) -> dict:
    """Median, minimum and 25th-75th percentiles."""
    if len(values) == 1:
        return {"median": values[0], "min": values[0], "p25": values[0], "p75": values[0]}
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "p25": quartiles[0],
        "p75": quartiles[2],
    }


def fmt_ratio(entry: dict, target: float | None) -> str:
    """`1.012 (0.99-1.03) ok; CPU 1.01`: the wall-time ratio of medians (per-round
    25th-75th percentiles), against the target if any, and the CPU-time ratio."""
    verdict = ""
    if target is not None:
        verdict = " ok" if entry["ratio"] <= target else " **over**"
    return (
        f"{entry['ratio']:.3f} ({entry['round_p25']:.2f}-{entry['round_p75']:.2f}){verdict}; "
        f"CPU {entry['cpu_ratio']:.3f}"
    )


def fmt_time(values: list[float]) -> str:
    """Median step time in ms, with the 25th-75th percentiles."""
    stats = summary(values)
    return f"{stats['median'] * 1e3:.0f} ({stats['p25'] * 1e3:.0f}-{stats['p75'] * 1e3:.0f})"


def optimizer_table(results: list[dict]) -> str:
    """Markdown table of part 1, one row per backend run."""
    lines = [
        "| backend | AdamW ms | DiscriminativeLR ms | MultiOptimizer ms "
        f"| DLR / AdamW (target <= {DLR_TARGET}) | DLR / MultiOptimizer "
        "| first step s: AdamW / DLR / Multi | max abs weight diff DLR vs Multi |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        part = result["optimizers"]
        times = part["times"]["wall"]
        first = " / ".join(
            f"{part['first_step_s'][name]:.1f}"
            for name in ("adamw", "discriminative_lr", "multi_optimizer")
        )
        lines.append(
            f"| {run_name(result)} | {fmt_time(times['adamw'])} "
            f"| {fmt_time(times['discriminative_lr'])} "
            f"| {fmt_time(times['multi_optimizer'])} "
            f"| {fmt_ratio(part['dlr_vs_adamw'], DLR_TARGET)} "
            f"| {fmt_ratio(part['dlr_vs_multi'], None)} | {first} "
            f"| {part['dlr_vs_multi_max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def stage_table(results: list[dict]) -> str:
    """Markdown table of part 2 (and part 3 where it ran)."""
    lines = [
        "| backend | epoch: groups | trainable params | FreezeSchedule ms | fresh compile ms "
        f"| FreezeSchedule / fresh compile (target <= {FREEZE_TARGET}) "
        "| stage change s = switch + first step - steady "
        "| fresh compile s = compile + first step - steady "
        "| inside `fit`: stage change s (steady ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        fit_by_epoch = {entry["epoch"]: entry for entry in result.get("fit", [])}
        for stage in result["stages"]:
            lines.append(stage_row(run_name(result), stage, fit_by_epoch.get(stage["epoch"])))
    return "\n".join(lines)


def run_name(result: dict) -> str:
    """The backend, and which run of it when the driver repeated it."""
    repeat = result.get("repeat")
    return result["backend"] if repeat is None else f"{result['backend']} #{repeat}"


def stage_row(backend: str, stage: dict, fit_entry: dict | None) -> str:
    """One row of the stage table."""
    times = stage["times"]["wall"]
    first = " (first compile)" if stage["epoch"] == 0 else ""
    change = (
        f"{stage['change_overhead_s']:.1f} = {stage['switch_s']:.2f} + "
        f"{stage['first_step_s']:.1f} - {statistics.median(times['freeze_schedule']):.2f}{first}"
    )
    reference = (
        f"{stage['reference_overhead_s']:.1f} = {stage['reference_compile_s']:.2f} + "
        f"{stage['reference_first_step_s']:.1f} - {statistics.median(times['fresh_compile']):.2f}"
    )
    in_fit = "-"
    if fit_entry is not None:
        in_fit = (
            f"{fit_entry['change_overhead_s']:.1f} = {fit_entry['switch_s']:.2f} + "
            f"{fit_entry['first_step_s']:.1f} - {fit_entry['steady']['median']:.2f}{first}"
        )
    return (
        f"| {backend} | {stage['epoch']}: {stage['trainable_groups']} "
        f"| {stage['trainable_params']:,} | {fmt_time(times['freeze_schedule'])} "
        f"| {fmt_time(times['fresh_compile'])} | {fmt_ratio(stage['ratio'], FREEZE_TARGET)} "
        f"| {change} | {reference} | {in_fit} |"
    )


def comparisons(result: dict) -> list[tuple[str, dict, str, str, float | None]]:
    """(label, timings, numerator, denominator, target) of every ratio in a run."""
    found = [
        ("DLR / AdamW", result["optimizers"]["times"], "discriminative_lr", "adamw", DLR_TARGET),
        (
            "DLR / MultiOptimizer",
            result["optimizers"]["times"],
            "discriminative_lr",
            "multi_optimizer",
            None,
        ),
    ]
    for stage in result["stages"]:
        label = f"FreezeSchedule / fresh compile, top {stage['trainable_groups']} trainable"
        found.append((label, stage["times"], "freeze_schedule", "fresh_compile", FREEZE_TARGET))
    return found


def pooled_table(results: list[dict]) -> str:
    """Every ratio per backend: each run's ratio of medians, and the per-round
    ratios of all runs pooled."""
    lines = [
        "| backend | ratio | target | wall, each run | wall, all rounds: median (p25-p75) "
        "| CPU, each run | CPU, all rounds: median (p25-p75) |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend in dict.fromkeys(result["backend"] for result in results):
        runs = [comparisons(result) for result in results if result["backend"] == backend]
        for index, (label, _, _, _, target) in enumerate(runs[0]):
            cells = [pooled_cells([run[index] for run in runs], clock) for clock in ("wall", "cpu")]
            shown = "-" if target is None else f"<= {target}"
            lines.append(f"| {backend} | {label} | {shown} | {' | '.join(cells)} |")
    return "\n".join(lines)


def pooled_cells(entries: list[tuple], clock: str) -> str:
    """Two table cells: each run's ratio of medians, and the pooled per-round ratios."""
    each_run, per_round = [], []
    for _, times, numerator, denominator, _ in entries:
        top, bottom = times[clock][numerator], times[clock][denominator]
        each_run.append(f"{statistics.median(top) / statistics.median(bottom):.3f}")
        per_round.extend(a / b for a, b in zip(top, bottom))
    stats = summary(per_round)
    return (
        f"{', '.join(each_run)} | **{stats['median']:.3f}** ({stats['p25']:.3f}-{stats['p75']:.3f})"
    )


def report(results: list[dict]) -> str:
    """The markdown tables for every backend run."""
    return "\n\n".join(
        [
            "Summary: every ratio, per backend, over all runs (a ratio of 1.000 is no "
            "overhead). `wall, each run`: each run's ratio of median wall times; `all "
            "rounds`: the median of the per-round ratios of all runs pooled; `CPU`: the "
            "same for process CPU time, which the other jobs on the machine disturb less.",
            pooled_table(results),
            f"DiscriminativeLR (decay {results[0]['settings']['decay']}) against plain AdamW and "
            "MultiOptimizer (one AdamW per group at the same rates). Step times: median "
            "(25th-75th percentiles) in ms. Ratios: wall-time ratio of medians (25th-75th "
            "percentiles of the per-round ratios); `CPU`: ratio of median process CPU times.",
            optimizer_table(results),
            f"FreezeSchedule {results[0]['settings']['schedule']} against the same freeze set "
            "by hand and a fresh "
            "`compile`; stage-change and fresh-compile costs in seconds:",
            stage_table(results),
        ]
    )


def machine() -> str:
    """`nproc` and the CPU model, as the README records them."""
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
        platform.processor() or "unknown",
    )
    return f"{cores}-core CPU (`nproc` = {cores}, `lscpu` Model name: {model}), no GPU"


def readme_section(results: list[dict]) -> str:
    """The README section: how it was run, on what, and the tables."""
    return "\n".join(
        [
            *readme_setup(results),
            "",
            report(results),
            "",
        ]
    )


def readme_setup(results: list[dict]) -> list[str]:
    """The README lines on the command, machine, versions and method."""
    versions, settings = results[0]["versions"], results[0]["settings"]
    commands = list(dict.fromkeys(result.get("command", COMMAND) for result in results))
    walls = ", ".join(f"{run_name(r)} {r['wall_s'] / 60:.1f} min" for r in results)
    return [
        SECTION_TITLE,
        "",
        "Command: " + "; then ".join(f"`{command}`" for command in commands),
        "",
        f"- Machine: {machine()}; shared with other jobs, so expect noise.",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Versions: keras {versions['keras']}, keras-hub {versions['keras_hub']}, "
        f"tensorflow {versions['tensorflow']}, jax {versions['jax']}",
        f"- Model: random MiniLM-shaped `BertBackbone` (6 x 384, 12 heads, "
        f"vocabulary {settings['vocabulary_size']}) + `Dense(2)` on `pooled_output`, 9 layer "
        f"groups; batch {settings['batch_size']}, sequence length "
        f"{settings['sequence_length']}; AdamW lr {settings['learning_rate']}, weight decay "
        f"{settings['weight_decay']}.",
        f"- Timing: `train_on_batch` wall and process CPU time, {results[0]['steps']} "
        f"interleaved rounds (rotating order) after {results[0]['warmup']} warm-up steps. "
        "Each backend runs in its own process; run times: " + walls + ".",
        "- TensorFlow runs the train step as a `tf.function` without XLA (Keras' "
        '`jit_compile="auto"` turns XLA off on CPU-only machines); JAX jit-compiles it.',
        "- FreezeSchedule stages (table 2) are entered by calling the callback's "
        "`on_train_begin` / `on_epoch_begin` by hand, as `fit` does, so each stage can be "
        "timed interleaved with its reference: the same model built again, the same groups "
        "frozen by setting `layer.trainable` by hand, and compiled afresh with a new AdamW. "
        "`switch` is the time of `on_epoch_begin` (`set_trainable_groups`); the first step "
        "after it retraces the train function. The last column repeats the stage changes "
        f"inside one real `model.fit` ({results[0].get('fit_steps', '?')} steps per epoch), "
        "timed by callbacks around `FreezeSchedule`.",
    ]


def write_readme(section: str) -> None:
    """Replaces this benchmark's section of `benchmarks/README.md` (or creates it)."""
    text = README.read_text() if README.exists() else "# Benchmarks\n\n"
    pattern = re.compile(re.escape(SECTION_TITLE) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    README.write_text(text.rstrip("\n") + "\n")
