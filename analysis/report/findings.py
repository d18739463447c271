"""The report's opening: findings in words, each a sentence the tables below support.

`findings` reads the configuration estimates of a `Comparison` (`analysis.stats.noise`: a series at
one load, its value, standard error and how the error was made) and states:
- how sure the figures are: the interval method, and what a sweep without repeats cannot see;
- per axis (output tok/s, median TTFT, median TPOT where measured), which configuration leads and
  by how much over the next best, with the interval of that ratio, or that the best are within
  noise of each other and none leads. The next best is named with every configuration within
  noise of it ("the next three, within noise of each other: A, B, C"): which one of them came
  second is itself noise;
- at each load where several configurations ran, how they compare on output tok/s;
- which trials are not to be trusted, and why (the checks of `analysis.report.flags`). A
  configuration with a trial the checks distrust (too short, client-bound, its token counts
  mismatched: `analysis.report.flags.distrust`) is left out of every comparison and named as not
  compared, with why: no finding states a figure the report below calls untrustworthy.
`quality_findings` adds, with `quality=on`, each configuration's speed against its drift from
the quality baseline (`analysis.report.quality`).
A difference whose interval includes no change, or a change smaller than `MARGIN`, is only
ever stated as within noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from analysis.report.flags import distrust, too_small, trial_checks
from analysis.stats.compare import TPOT_MEDIAN, TTFT_MEDIAN, Comparison
from analysis.stats.noise import (
    BETTER,
    LEVEL,
    NO_INTERVAL,
    REPEATS,
    WITHIN_NOISE,
    Difference,
    Estimate,
    compare,
)
from sweep.core import records as rec

LOAD_MARK = " @ "
# The smallest difference the findings state: the drift between runs of one configuration on a
# quiet machine (`aa_check`) reaches a few percent, so a smaller difference, however sure its
# interval within one run, is not one the next run would repeat.
MARGIN = 0.05
MAX_LOADS, MAX_NAMED = 8, 4
MAX_QUALITY_LINES = 8  # configurations stated against the quality baseline; the table has all
NOISE_CHECK = (
    "`python -m sweep +experiment=aa_check` runs one configuration five times and "
    "`python -m analysis results/aa_check --noise` prints the spread this machine gives"
)


@dataclass(frozen=True)
class Axis:
    """A metric the findings rank configurations on."""

    metric: str
    name: str
    unit: str
    fmt: str
    higher_is_better: bool


AXES = (
    Axis(rec.OUTPUT_THROUGHPUT, "output tok/s", "tok/s", ",.1f", True),
    Axis(TTFT_MEDIAN, "median TTFT", "ms", ",.1f", False),
    Axis(TPOT_MEDIAN, "median TPOT", "ms", ",.2f", False),
)


def findings(comparison: Comparison) -> list[str]:
    """The findings of one sweep, most important first; empty when nothing was measured.

    Every difference they state holds at 95% confidence over all the comparisons they make
    together (Bonferroni): with k comparisons, each is judged at 1 - 0.05 / k, so that a sweep of
    many configurations does not state a chance difference somewhere.
    """
    if not comparison.estimates:
        return []
    withheld = withheld_configurations(comparison)
    found = {k: v for k, v in comparison.estimates.items() if k not in withheld}
    level = 1 - (1 - LEVEL) / max(1, _comparisons(found))
    lines = [_how_sure(comparison, level)]
    for axis in AXES:
        lines.extend(_leader(found, axis, level))
    lines.extend(_same_load(found, AXES[0], level))
    lines.append(_not_compared(withheld))
    lines.extend(_untrusted(comparison.trials))
    return [line for line in lines if line]


def withheld_configurations(comparison: Comparison) -> dict[str, str]:
    """Configuration -> why its figures are not stated: a trial of it the checks distrust.

    Empty when the comparison does not name its trials' configurations.
    """
    names = comparison.configurations
    if names is None or comparison.trials.empty:
        return {}
    why = distrust(comparison.trials)
    withheld: dict[str, str] = {}
    for name, reasons in why[why != ""].groupby(names[why != ""], sort=True):
        withheld[str(name)] = ", ".join(dict.fromkeys(", ".join(reasons).split(", ")))
    return withheld


def _not_compared(withheld: Mapping[str, str]) -> str:
    if not withheld:
        return ""
    named = [f"**{name}** ({why})" for name, why in list(withheld.items())[:MAX_NAMED]]
    more = len(withheld) - len(named)
    tail = f" and {_count(more)} more" if more > 0 else ""
    return (
        f"Not compared: {', '.join(named)}{tail}. Their trials are ones the checks below "
        "distrust, so no figure of theirs is stated here; rerun them longer, or with the "
        "client or the counts fixed (*Request checks*)."
    )


def _comparisons(found: Mapping[str, Mapping[str, Estimate]]) -> int:
    """How many differences the findings judge: leader against each other, per axis and load."""
    count = sum(max(0, len(_ranked(found, axis)) - 1) for axis in AXES)
    for configurations in _by_load(found).values():
        count += max(0, len(_ranked(configurations, AXES[0])) - 1)
    return count


def _how_sure(c: Comparison, level: float) -> str:
    repeated = any(e.method == REPEATS for per in c.estimates.values() for e in per.values())
    text = (
        f"{c.noise_method} A difference is stated only when it holds at 95% over all the "
        f"comparisons below together (each judged at {level:.2%}) and is larger than "
        f"{MARGIN:.0%}, the drift between runs of a quiet machine; a smaller one is within noise."
    )
    if not repeated:
        text += (
            " This sweep has no repeats, so a difference that looks real here may not hold on the "
            f"next run: add `sweep.repeats=3`, or see how noisy this machine is ({NOISE_CHECK})."
        )
    return text


def _leader(found: Mapping[str, Mapping[str, Estimate]], axis: Axis, level: float) -> list[str]:
    """Who leads on the axis, or which lead together within noise, and the gap to the rest."""
    ranked = _ranked(found, axis)
    if len(ranked) < 2:
        return []
    leader, best = ranked[0]
    tied = [
        (name, est)
        for name, est in ranked[1:]
        if compare(best, est, axis.higher_is_better, level, MARGIN).verdict
        in (WITHIN_NOISE, NO_INTERVAL)
    ]
    rest = [(name, est) for name, est in ranked[1:] if name not in dict(tied)]
    value = f"{best.value:{axis.fmt}} {axis.unit}"
    gap = ""
    if rest:
        diff = compare(best, rest[0][1], axis.higher_is_better, level, MARGIN)
        gap = f"{_by_how_much(diff, axis)} {_runners_up(rest, axis, level)}"
    if not tied:
        return [f"**{leader}** leads on {axis.name} ({value}): {gap}."]
    named = ", ".join(
        f"**{name}** ({compare(est, best, True, level, MARGIN).text()})"
        for name, est in tied[:MAX_NAMED]
    )
    more = f" and {len(tied) - MAX_NAMED} more" if len(tied) > MAX_NAMED else ""
    if not rest:
        return [
            f"No configuration leads on {axis.name} beyond noise: **{leader}** ({value}) is "
            f"within noise of {named}{more}."
        ]
    return [
        f"**{leader}** ({value}) and {named}{more} lead on {axis.name}, within noise of each "
        f"other; {gap}."
    ]


def _runners_up(rest: list[tuple[str, Estimate]], axis: Axis, level: float) -> str:
    """`the next, **B**`, or `the next three, within noise of each other: **B**, **C**, **D**`.

    The group is the best of `rest` and every other configuration within noise of it.
    """
    (first, best), others = rest[0], rest[1:]
    group = [first] + [
        name
        for name, est in others
        if compare(best, est, axis.higher_is_better, level, MARGIN).verdict
        in (WITHIN_NOISE, NO_INTERVAL)
    ]
    if len(group) == 1:
        return f"the next, **{first}**"
    named = ", ".join(f"**{name}**" for name in group[:MAX_NAMED])
    more = f" and {len(group) - MAX_NAMED} more" if len(group) > MAX_NAMED else ""
    return f"the next {_count(len(group))}, within noise of each other: {named}{more}"


def _count(n: int) -> str:
    """A count in words up to ten, else in digits."""
    words = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    return words[n - 2] if 2 <= n <= 10 else str(n)


def _by_load(
    found: Mapping[str, Mapping[str, Estimate]],
) -> dict[str, dict[str, Mapping[str, Estimate]]]:
    """Load -> series -> estimates, from configuration names `series @ load`."""
    by_load: dict[str, dict[str, Mapping[str, Estimate]]] = {}
    for name, per in found.items():
        series, _, load = name.rpartition(LOAD_MARK)
        if series:
            by_load.setdefault(load, {})[series] = per
    return dict(list(by_load.items())[:MAX_LOADS])


def _same_load(found: Mapping[str, Mapping[str, Estimate]], axis: Axis, level: float) -> list[str]:
    lines = []
    for load, configurations in _by_load(found).items():
        ranked = _ranked(configurations, axis)
        if len(ranked) < 2:
            continue
        (best_name, best), others = ranked[0], ranked[1:MAX_NAMED]
        parts_beyond, parts_within = [], []
        for name, est in others:
            diff = compare(best, est, axis.higher_is_better, level, MARGIN)
            if diff.verdict == BETTER:
                parts_beyond.append(f"{_by_how_much(diff, axis)} **{name}**")
            else:
                parts_within.append(
                    f"**{name}** ({compare(est, best, True, level, MARGIN).text()})"
                )
        if parts_beyond:
            lines.append(
                f"At {load}, **{best_name}** leads on {axis.name}: " + "; ".join(parts_beyond) + "."
            )
        if parts_within:
            lines.append(
                f"At {load}, **{best_name}** and " + ", ".join(parts_within) + " are within noise "
                f"of each other on {axis.name}."
            )
    return lines


def _untrusted(trials: pd.DataFrame) -> list[str]:
    checks = trial_checks(trials)
    failed = int((trials[rec.TRIAL_STATUS] != rec.STATUS_OK).sum())
    lines = []
    if checks:
        short = int(too_small(trials).sum())
        extra = f", {short} of them too short to say anything" if short else ""
        lines.append(
            f"{len(checks)} trial(s) are not to be trusted as they stand{extra}; each is named "
            "with its reason under *Request checks*."
        )
    prompts = pd.to_numeric(
        trials.get(rec.INPUT_MISMATCH_REQUESTS, pd.Series(0, trials.index)), errors="coerce"
    ).fillna(0)
    if (miscounted := int((prompts > 0).sum())) > 0:
        lines.append(
            f"{miscounted} trial(s) sent prompts their server counted differently from the "
            "client: their figures are for other prompts than the workload asked for (see "
            "*Request checks*)."
        )
    if failed:
        lines.append(f"{failed} trial(s) failed; see *Failed trials*.")
    return lines


def _ranked(found: Mapping[str, Mapping[str, Estimate]], axis: Axis) -> list[tuple[str, Estimate]]:
    """Configurations with a value on the axis, best first."""
    values = [
        (name, per[axis.metric])
        for name, per in found.items()
        if axis.metric in per and math.isfinite(per[axis.metric].value)
    ]
    return sorted(values, key=lambda item: item[1].value, reverse=axis.higher_is_better)


def _by_how_much(diff: Difference, axis: Axis) -> str:
    """`2.95x [2.61x, 3.29x] that of`, `12.0% [4.1%, 20.3%] more than`, `2.10x [...] lower than`."""
    ratio, low, high = diff.ratio, diff.low, diff.high
    if not axis.higher_is_better:  # say how many times lower: invert the ratio
        ratio, low, high = 1 / ratio, 1 / high, 1 / low
    if ratio >= 1.5:
        relation = "that of" if axis.higher_is_better else "lower than"
        return f"{ratio:.2f}x [{low:.2f}x, {high:.2f}x] {relation}"
    relation = "more than" if axis.higher_is_better else "lower than"
    return f"{(ratio - 1) * 100:.1f}% [{(low - 1) * 100:.1f}%, {(high - 1) * 100:.1f}%] {relation}"


def withheld_deployments(trials: pd.DataFrame) -> dict[str, str]:
    """Deployment id -> why the speed of its trials is not stated (`withheld_configurations`)."""
    if trials.empty or rec.DEPLOYMENT_ID not in trials:
        return {}
    why = distrust(trials)
    ids = trials[rec.DEPLOYMENT_ID][why != ""]
    return {
        str(d): ", ".join(dict.fromkeys(", ".join(r).split(", ")))
        for d, r in why[why != ""].groupby(ids, sort=True)
    }


def quality_findings(table: pd.DataFrame, withheld: Mapping[str, str] | None = None) -> list[str]:
    """Each configuration's speed against its quality drift from the baseline, in words.

    `table` is `analysis.report.quality.quality_table`'s: one row per deployment with its best
    trial's output tok/s, its KL (top-K) from the baseline, top-1 agreement and perplexity ratio,
    each with its 95% interval over texts. A line reads "**4-bit**: 1.90x the output tok/s of
    **fp16** (best trials) at KL 0.031 [0.027, 0.035] from it; top-1 agreement 0.91 [0.89,
    0.93]". Where the scores list no alternatives (TGI), the perplexity ratio stands in for KL;
    a deployment that was not scored says why. The speed ratio is of single trials and carries
    no interval: the speed findings above judge speed with its noise. A deployment in `withheld`
    (deployment id -> why: `withheld_deployments`), or set against a baseline that is, gets its
    drift without a speed: its trials are ones the checks distrust.
    """
    withheld = withheld or {}
    if table.empty or "baseline" not in table or table["baseline"].isna().all():
        return []
    base_name = table["baseline"].dropna().iloc[0]
    base = table[table["configuration"] == base_name]
    base_speed = float(base[rec.OUTPUT_THROUGHPUT].iloc[0]) if len(base) else math.nan
    base_ids = base[rec.DEPLOYMENT_ID] if rec.DEPLOYMENT_ID in base else []
    base_why = next((withheld[str(d)] for d in base_ids if str(d) in withheld), "")
    if base_why:
        base_why = f"of the baseline {base_why}"
    lines = []
    for _, row in table.iterrows():
        name = row["configuration"]
        if name == base_name:
            continue
        drift = _drift(row)
        if drift is None:
            lines.append(f"**{name}**: quality {row['status']}.")
            continue
        speed = float(row[rec.OUTPUT_THROUGHPUT])
        why = withheld.get(str(row.get(rec.DEPLOYMENT_ID))) or base_why
        if why:
            pace = f"speed not stated (trials {why}: *Request checks*)"
        elif math.isfinite(speed) and math.isfinite(base_speed) and base_speed > 0:
            pace = f"{speed / base_speed:.2f}x the output tok/s of **{base_name}** (best trials)"
        else:
            pace = f"no speed to set against **{base_name}**'s (no successful trial)"
        lines.append(f"**{name}**: {pace} at {drift}.")
    return lines[:MAX_QUALITY_LINES]


def _drift(row: pd.Series) -> str | None:
    """`KL 0.031 [0.027, 0.035] from it; top-1 agreement ...`, or the perplexity ratio alone."""

    def figure(name: str, fmt: str) -> str | None:
        value = row.get(name)
        if value is None or not math.isfinite(value):
            return None
        return f"{value:{fmt}} [{row[f'{name}_low']:{fmt}}, {row[f'{name}_high']:{fmt}}]"

    kl, top1 = figure("kl_topk", ".3g"), figure("top1_agreement", ".2f")
    ratio = figure("perplexity_ratio", ".4f")
    if kl is not None:
        return f"KL {kl} from it; top-1 agreement {top1}"
    if ratio is not None:
        return f"perplexity {ratio} times its (no top-K from this server, so no KL)"
    return None
