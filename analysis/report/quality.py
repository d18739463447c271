"""Quality against speed: each deployment's scores on the quality set, against the baseline's.

Reads `quality.parquet` (`records.QUALITY_SCHEMA`, one row per scored token of each deployment)
and the summary. Per deployment: perplexity on the set (exp of the mean negative log-probability
of its tokens). Against the baseline deployment, position by position (the same text and
position, and the same token: the comparison refuses sets or tokenizations that differ):
- KL divergence over the baseline's top-K tokens, KL(baseline || configuration) on K + 1
  outcomes: the baseline's K most likely tokens and "any other". The configuration's probability
  of a token of that list is its own where its top-K lists it too; otherwise it is unknown but at
  most its K-th probability, and the mass outside its list is shared by all such tokens, so it
  takes the smaller of the two. On equal rows the figure is exactly 0;
- top-1 agreement: the share of positions where both rank the same token first;
- the perplexity ratio, configuration / baseline.
A deployment scored without alternatives (TGI lists none for prompt tokens) has perplexity and
its ratio only; KL and top-1 agreement need both sides' top-K.
Each is token-weighted over the set, with a 95% percentile interval from a bootstrap over texts
(`analysis.stats.noise.resamples`, fixed seed). The baseline is named by `--baseline`, else by the
experiment's `quality.baseline` (sweep.yaml), else it is the first deployment whose backend
recorded itself as the baseline.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from analysis.read.columns import number
from analysis.report.sections import Image, Section
from analysis.stats.compare import declared_baseline, engine_labels
from analysis.stats.noise import LEVEL, resamples
from sweep.core import records as rec
from sweep.core.errors import SweepError

CONFIGURATION = "configuration"
PERPLEXITY = "perplexity"
KL = "kl_topk"
TOP1 = "top1_agreement"
PPL_RATIO = "perplexity_ratio"
FIGURES = (PERPLEXITY, KL, TOP1, PPL_RATIO)
FLOOR = 1e-12  # the smallest "any other" mass a configuration is given (log of 0 is undefined)


def quality_baseline(results_dir: str | Path) -> str | None:
    """The experiment's `quality.baseline` as sweep.yaml recorded it (None: not named)."""
    path = Path(results_dir) / rec.SWEEP_YAML
    if not path.is_file():
        return None
    meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return ((meta.get("config") or {}).get("quality") or {}).get("baseline")


def quality_table(
    quality: pd.DataFrame, summary: pd.DataFrame, baseline: str | None = None
) -> pd.DataFrame:
    """One row per deployment with a quality status: its speed, perplexity and the comparisons.

    Columns: configuration, deployment_id, status, output tok/s and USD per 1M output tokens
    (its best successful trial), tokens scored, then for each of `FIGURES` the value and its
    `_low` / `_high` interval, and `baseline` (the baseline's configuration).

    Raises:
        SweepError: `baseline` names no deployment of the sweep.
    """
    deployments = _deployments(summary)
    if deployments.empty:
        return pd.DataFrame()
    base_id = _baseline_id(deployments, baseline, set(quality.get(rec.DEPLOYMENT_ID, [])))
    by_id = dict(tuple(quality.groupby(rec.DEPLOYMENT_ID))) if len(quality) else {}
    base = by_id.get(base_id)
    base_name = deployments.loc[base_id, CONFIGURATION] if base_id is not None else None
    rows = []
    for deployment_id, info in deployments.iterrows():
        row: dict[str, Any] = {
            CONFIGURATION: info[CONFIGURATION],
            rec.DEPLOYMENT_ID: deployment_id,
            "status": info["status"],
            rec.OUTPUT_THROUGHPUT: info[rec.OUTPUT_THROUGHPUT],
            rec.COST_PER_1M_OUTPUT: info[rec.COST_PER_1M_OUTPUT],
            "baseline": base_name,
        }
        own = by_id.get(deployment_id)
        if own is not None:
            row.update(_figures(own, base))
            if row.get("status") is None:
                row["status"] = rec.QUALITY_SCORED
        rows.append(row)
    table = pd.DataFrame(rows)
    for figure in FIGURES:
        for part in ("", "_low", "_high"):
            if f"{figure}{part}" not in table:
                table[f"{figure}{part}"] = np.nan
    return table


def _deployments(summary: pd.DataFrame) -> pd.DataFrame:
    """Per deployment that recorded a quality status: its label, status and best speed."""
    if rec.QUALITY_STATUS not in summary or rec.DEPLOYMENT_ID not in summary:
        return pd.DataFrame()
    frame = summary[summary[rec.QUALITY_STATUS].notna()].copy()
    if frame.empty:
        return pd.DataFrame()
    frame[CONFIGURATION] = _names(frame)
    frame["declared"] = declared_baseline(frame)
    frame["speed"] = pd.to_numeric(frame.get(rec.OUTPUT_THROUGHPUT), errors="coerce")
    ok = frame[rec.TRIAL_STATUS] == rec.STATUS_OK
    frame.loc[~ok, "speed"] = np.nan
    rows = {}
    for deployment_id, group in frame.groupby(rec.DEPLOYMENT_ID, sort=False):
        best = group.loc[group["speed"].idxmax()] if group["speed"].notna().any() else None
        rows[deployment_id] = {
            CONFIGURATION: group[CONFIGURATION].iloc[0],
            "status": group[rec.QUALITY_STATUS].iloc[0],
            "declared": bool(group["declared"].iloc[0]),
            "backend": str(group.get(rec.BACKEND_NAME, pd.Series([None])).iloc[0]),
            "choice": _choice(group.get(rec.GROUP_CHOICES, pd.Series([None])).iloc[0]),
            rec.OUTPUT_THROUGHPUT: np.nan if best is None else best["speed"],
            rec.COST_PER_1M_OUTPUT: np.nan
            if best is None
            else number(best.get(rec.COST_PER_1M_OUTPUT)),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _names(frame: pd.DataFrame) -> pd.Series:
    """A configuration's engine label, made unique per deployment (`hf`, `hf #2`)."""
    labels = engine_labels(frame)
    names: dict[str, str] = {}
    for deployment_id, label in zip(frame[rec.DEPLOYMENT_ID], labels, strict=True):
        if deployment_id not in names:
            taken = sum(1 for name in names.values() if name.split(" #")[0] == label)
            names[deployment_id] = label if not taken else f"{label} #{taken + 1}"
    return frame[rec.DEPLOYMENT_ID].map(names)


def _choice(choices: Any) -> str | None:
    try:
        return json.loads(choices).get("backend") if isinstance(choices, str) else None
    except ValueError:
        return None


def _baseline_id(deployments: pd.DataFrame, baseline: str | None, scored: set) -> str | None:
    """The baseline deployment: the named one (option, backend, label), else the declared one."""
    if baseline is None:
        declared = deployments[deployments["declared"]]
        return declared.index[0] if len(declared) else None
    for key in ("choice", CONFIGURATION, "backend"):
        match = deployments[deployments[key] == baseline]
        if len(match):
            scored_first = [d for d in match.index if d in scored]
            return scored_first[0] if scored_first else match.index[0]
    raise SweepError(
        f"quality baseline {baseline!r} names no deployment of the sweep; its configurations: "
        f"{', '.join(deployments[CONFIGURATION])}"
    )


def _figures(own: pd.DataFrame, base: pd.DataFrame | None) -> dict[str, float]:
    """Perplexity and, with a baseline, KL, top-1 agreement and perplexity ratio, with intervals."""
    own = own.sort_values([rec.TEXT_IDX, rec.POSITION])
    texts = own[rec.TEXT_IDX].to_numpy()
    counts = np.bincount(texts)
    nll = np.bincount(texts, weights=-own[rec.TOKEN_LOGPROB].to_numpy(float))
    figures = {"tokens": int(counts.sum())}
    per_text = {PERPLEXITY: (nll, counts, np.exp)}
    if base is not None:
        base = base.sort_values([rec.TEXT_IDX, rec.POSITION])
        _check_aligned(own, base)
        base_nll = np.bincount(texts, weights=-base[rec.TOKEN_LOGPROB].to_numpy(float))
        if has_top_k(own) and has_top_k(base):  # TGI lists no alternatives for prompt tokens
            kl, top1 = position_figures(base, own)
            per_text[KL] = (np.bincount(texts, weights=kl), counts, None)
            per_text[TOP1] = (np.bincount(texts, weights=top1.astype(float)), counts, None)
        per_text[PPL_RATIO] = (nll - base_nll, counts, np.exp)
    draws = resamples(len(counts), np.random.default_rng(0))
    tail = (1 - LEVEL) / 2 * 100
    for figure, (sums, weights, link) in per_text.items():
        value = sums.sum() / weights.sum()
        boot = sums[draws].sum(axis=1) / weights[draws].sum(axis=1)
        low, high = np.percentile(boot, [tail, 100 - tail])
        if link is not None:
            value, low, high = link(value), link(low), link(high)
        figures |= {
            figure: float(value),
            f"{figure}_low": float(low),
            f"{figure}_high": float(high),
        }
    return figures


def has_top_k(scores: pd.DataFrame) -> bool:
    """Whether a deployment's scores list top-K alternatives (a server's may not: TGI's)."""
    return len(scores) > 0 and len(scores[rec.TOP_IDS].iloc[0]) > 0


def _check_aligned(own: pd.DataFrame, base: pd.DataFrame) -> None:
    """The two scored the same tokens at the same positions, or the comparison is meaningless."""
    keys = [rec.TEXT_IDX, rec.POSITION, rec.TOKEN_ID]
    same = len(own) == len(base) and (own[keys].to_numpy() == base[keys].to_numpy()).all()
    if not same or set(own[rec.QUALITY_SET_SHA256]) != set(base[rec.QUALITY_SET_SHA256]):
        raise SweepError(
            f"deployment {own[rec.DEPLOYMENT_ID].iloc[0]} scored other texts or tokens than the "
            f"baseline {base[rec.DEPLOYMENT_ID].iloc[0]}: their quality sets or tokenizers differ"
        )


def position_figures(base: pd.DataFrame, own: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per aligned position: KL(baseline || own) over the baseline's top-K, and top-1 agreement."""
    b_ids, b_lp = _matrix(base[rec.TOP_IDS]), _matrix(base[rec.TOP_LOGPROBS])
    o_ids, o_lp = _matrix(own[rec.TOP_IDS]), _matrix(own[rec.TOP_LOGPROBS])
    match = b_ids[:, :, None] == o_ids[:, None, :]  # (positions, base k, own k)
    found = match.any(axis=2)
    q = np.where(found, np.exp(np.take_along_axis(o_lp, match.argmax(axis=2), axis=1)), 0.0)
    missing = (~found).sum(axis=1, keepdims=True)
    own_rest = np.clip(1.0 - np.exp(o_lp).sum(axis=1, keepdims=True), 0.0, None)
    guess = np.minimum(np.exp(o_lp[:, -1:]), own_rest / np.maximum(missing, 1))
    q = np.where(found, q, guess)
    p = np.exp(b_lp)
    p_rest = np.clip(1.0 - p.sum(axis=1), 0.0, None)
    q_rest = np.clip(1.0 - q.sum(axis=1), FLOOR, None)
    with np.errstate(divide="ignore"):
        listed = (p * (b_lp - np.log(np.maximum(q, FLOOR)))).sum(axis=1)
        rest = np.where(
            p_rest > FLOOR, p_rest * (np.log(np.maximum(p_rest, FLOOR)) - np.log(q_rest)), 0.0
        )
    return listed + rest, b_ids[:, 0] == o_ids[:, 0]


def _matrix(column: pd.Series) -> np.ndarray:
    return np.stack([np.asarray(v) for v in column])


def quality_display(table: pd.DataFrame) -> pd.DataFrame:
    """The report's "Quality against speed" table: figures with their intervals."""

    def cells(figure: str, fmt: str) -> list[str]:
        out = []
        for _, row in table.iterrows():
            value = row[figure]
            if not math.isfinite(value):
                out.append("")
                continue
            out.append(
                f"{value:{fmt}} [{row[f'{figure}_low']:{fmt}}, {row[f'{figure}_high']:{fmt}}]"
            )
        return out

    return pd.DataFrame(
        {
            "Configuration": table[CONFIGURATION],
            "Output tok/s": table[rec.OUTPUT_THROUGHPUT].map(lambda v: _cell(v, ".1f")),
            "USD / 1M tok": table[rec.COST_PER_1M_OUTPUT].map(lambda v: _cell(v, ".3g")),
            "Perplexity": cells(PERPLEXITY, ".4g"),
            "PPL ratio": cells(PPL_RATIO, ".4f"),
            "KL (top-K)": cells(KL, ".3g"),
            "Top-1 agreement": cells(TOP1, ".3f"),
            "Quality": table["status"],
        }
    )


def _cell(value: Any, fmt: str) -> str:
    """A number as `fmt`, or empty where there is none (no priced hardware, no trial)."""
    number = pd.to_numeric(value, errors="coerce")
    return "" if pd.isna(number) else f"{number:{fmt}}"


def quality_sections(
    quality: pd.DataFrame | None, table: pd.DataFrame, front: Path | None = None
) -> list[Section]:
    """The "Quality against speed" section; none where no deployment ran with `quality=on`.

    Args:
        quality: every deployment's scores (`analysis.read.load.load_quality`).
        table: `quality_table` of those scores.
        front: the quality front's plot (`analysis.figures.quality_front`), shown beside the table.
    """
    if table.empty:
        return []
    scored = quality if quality is not None and len(quality) else None
    if scored is None:
        text = "No deployment could score the quality set; the Quality column says why."
    else:
        first = scored.iloc[0]
        base = table["baseline"].iloc[0]
        k = int(scored[rec.TOP_IDS].map(len).max())
        text = (
            f"Each deployment scored the quality set `{first[rec.QUALITY_SET_NAME]}` (sha256 "
            f"{str(first[rec.QUALITY_SET_SHA256])[:12]}, {scored[rec.TEXT_IDX].nunique()} texts, "
            f"{int(first[rec.QUALITY_SET_TOKENS])} tokens) teacher-forced through its own "
            f"backend, once. Against the baseline `{base}`: KL(baseline || configuration) over "
            f"the baseline's top {k} tokens and the rest as one outcome, the share of positions "
            "where both rank the same token first, and the perplexity ratio. Intervals are 95%, "
            "from a bootstrap over the texts. Speed is the deployment's best trial."
        )
        if base is None:
            text += " No baseline deployment: name one with quality.baseline or --baseline."
        if (scored.groupby(rec.DEPLOYMENT_ID)[rec.TOP_IDS].first().map(len) == 0).any():
            text += (
                " A deployment whose server lists no alternatives for prompt tokens (TGI) has "
                "perplexity and its ratio only."
            )
        if front is not None:
            text += (
                " The plot sets each configuration's USD per 1M output tokens against its KL; "
                "the front joins those no other beats on both."
            )
    images = (Image("Quality against cost", front),) if front is not None else ()
    return [Section("Quality against speed", text, table=quality_display(table), images=images)]


def quality_figures(
    quality: pd.DataFrame | None, summary: pd.DataFrame, baseline: str | None
) -> pd.DataFrame:
    """`quality_table` of loaded scores (None: the deployments' statuses alone)."""
    return quality_table(quality if quality is not None else _empty(), summary, baseline)


def _empty() -> pd.DataFrame:
    return rec.QUALITY_SCHEMA.empty_table().to_pandas()
