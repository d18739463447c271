"""Structured outputs beside speed: each configuration's valid answers and its output tok/s.

Reads the summary's `STRUCTURED_CHECKED` and `STRUCTURED_VALID_FRACTION` (`sweep.core.summary`,
from each answer checked against the trial's constraint, `sweep.core.structured`). The findings
say, per configuration, how many of its answers kept to the constraint at what speed (not where
the request checks distrust its trials: `analysis.report.flags.distrust`), name a
configuration whose answers broke it, and where the same configuration ran with the constraint
enforced and without, what enforcing it cost or gained in speed and validity. The report's table
has one row per configuration.
"""

from __future__ import annotations

import pandas as pd

from analysis.read.columns import numeric_column, series_labels
from analysis.report.flags import distrust
from analysis.report.sections import Section, formatted
from sweep.core import records as rec
from sweep.core.structured import DEFAULT_SPEC

ENFORCE = "workload.structured_enforce"
KIND, SPEC = "workload.structured", "workload.structured_spec"
CONFIGURATION = "configuration"


def structured_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration with checked answers: its valid share, answers and speed.

    The valid share pools the configuration's trials (valid answers over checked answers); the
    output tok/s is the mean over them. Ordered by validity, then speed.
    """
    if rec.STRUCTURED_CHECKED not in trials:
        return pd.DataFrame()
    checked = numeric_column(trials, rec.STRUCTURED_CHECKED)
    ok = trials[(checked > 0) & (trials.get(rec.TRIAL_STATUS) == rec.STATUS_OK)]
    if ok.empty:
        return pd.DataFrame()
    frame = pd.DataFrame(
        {
            CONFIGURATION: series_labels(ok),
            "checked": numeric_column(ok, rec.STRUCTURED_CHECKED),
            "valid": numeric_column(ok, rec.STRUCTURED_CHECKED)
            * numeric_column(ok, rec.STRUCTURED_VALID_FRACTION),
            rec.OUTPUT_THROUGHPUT: numeric_column(ok, rec.OUTPUT_THROUGHPUT),
            "enforced": ok[ENFORCE] if ENFORCE in ok else True,
            "constraint": [
                _constraint(k, v) for k, v in zip(_text(ok, KIND), _text(ok, SPEC), strict=True)
            ],
            "distrusted": distrust(ok),  # why its speed is not stated ("" where it may be)
        },
        index=ok.index,
    )
    grouped = frame.groupby(CONFIGURATION, sort=False)
    rows = grouped.agg(
        checked=("checked", "sum"),
        valid=("valid", "sum"),
        output=(rec.OUTPUT_THROUGHPUT, "mean"),
        enforced=("enforced", "first"),
        constraint=("constraint", "first"),
        distrusted=("distrusted", lambda why: ", ".join(dict.fromkeys(w for w in why if w))),
    ).reset_index()
    rows["valid_fraction"] = rows["valid"] / rows["checked"]
    return rows.sort_values(["valid_fraction", "output"], ascending=False, kind="stable")


def structured_findings(trials: pd.DataFrame) -> list[str]:
    """The findings' sentences on structured outputs; none without a checked answer."""
    rows = structured_rows(trials)
    if rows.empty:
        return []
    lines = []
    for _, row in rows.iterrows():
        how = "enforced" if _true(row["enforced"]) else "not enforced"
        line = (
            f"**{row[CONFIGURATION]}**: {row['valid_fraction']:.0%} of {row['checked']:.0f} "
            f"structured answers valid ({row['constraint']}, {how}) {_speed(row)}."
        )
        if row["valid_fraction"] < 1:
            line += f" Its answers broke the constraint {row['checked'] - row['valid']:.0f} times."
        lines.append(line)
    enforced = rows[rows["enforced"].map(_true)]
    free = rows[~rows["enforced"].map(_true)]
    if len(enforced) == 1 and len(free) == 1:
        on, off = enforced.iloc[0], free.iloc[0]
        why = ", ".join(dict.fromkeys(w for w in (on["distrusted"], off["distrusted"]) if w))
        if why:
            pace = f"; speed not stated (trials {why}: *Request checks*)"
        elif off["output"] > 0:
            ratio = on["output"] / off["output"]
            pace = f", at {ratio:.2f}x the output tok/s of the same requests unconstrained"
        else:
            pace = "; no unconstrained speed to set it against"
        lines.append(
            f"Enforcing the constraint: {on['valid_fraction']:.0%} valid against "
            f"{off['valid_fraction']:.0%} without{pace}."
        )
    return lines


def _speed(row: pd.Series) -> str:
    """`at 812.3 output tok/s`, or why its trials' speed is not stated (`flags.distrust`)."""
    if row["distrusted"]:
        return f"(speed not stated: trials {row['distrusted']})"
    return f"at {row['output']:,.1f} output tok/s"


def structured_sections(trials: pd.DataFrame) -> list[Section]:
    """The table of valid answers against speed; nothing without a checked answer."""
    rows = structured_rows(trials)
    if rows.empty:
        return []
    table = pd.DataFrame(
        {
            "Configuration": rows[CONFIGURATION],
            "Constraint": rows["constraint"],
            "Enforced": rows["enforced"].map(lambda v: "yes" if _true(v) else "no"),
            "Answers checked": formatted(rows["checked"], ".0f"),
            "Valid (%)": formatted(rows["valid_fraction"], ".1f", scale=100.0),
            "Output tok/s": formatted(rows["output"], ",.1f"),
        }
    )
    text = (
        "Every completed answer of a trial with `workload.structured` is checked against its "
        "constraint (a JSON schema with `jsonschema`, a regex by a full match, a choice, a Lark "
        "grammar by parsing it); `workload.structured_enforce=false` sends the same requests "
        "without asking the server to keep to it. Why an answer failed is in requests.parquet "
        "(`structured_error`)."
    )
    return [Section("Structured outputs", text, table=table)]


def _constraint(kind: str, spec: str) -> str:
    """`json_schema person`: the kind and the spec, the kind's shipped default where unset."""
    return f"{kind} {spec or DEFAULT_SPEC.get(kind, '')}".strip()


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series("", index=frame.index)
    return frame[column].map(lambda v: "" if v is None or pd.isna(v) else str(v))


def _true(value: object) -> bool:
    return value is True or str(value).lower() == "true"
