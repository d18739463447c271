"""Trials that deserve a second look: flagged successful trials, failed ones, the environment.

`problem_sections` builds the report's last sections from the summary frame: each successful
trial whose requests partly failed, whose client and server token counts disagree (outputs,
or prompts: the server read another input length than the workload's), whose output counts are
estimates (the server's stream did not count them), whose outputs came back short, whose load
generator could not keep up (client lag, the `client_saturated` flag) or that was too short to
trust (`too_short`), then every failed trial with its error kind and message, then the
environment the trials ran in. Trials whose
output lengths were not forced (the workload asked for no `ignore_eos`, or the backend recorded
that its requests cannot carry one: `records.BACKEND_IGNORE_EOS`, e.g. TGI's native API or an
endpoint without vLLM's extensions) are said to be so: their lengths are what the server
produced, and a short output may be the model's own end. A results folder written before backends
recorded that fact leaves it unknown, and the report says so rather than guess from a name.
Trials whose token counts are the server's own (an attached endpoint with
`backend.tokenizer=none`) are said to be so too, and those whose server counted no prompts
(their input lengths unverified).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.read.columns import display_text
from analysis.report.sections import MISSING, Section, pooled
from sweep.core import records as rec

# Below these a trial is too short to say anything, whatever its own minimum
# (`workload.min_requests`, `workload.min_duration_s`): a handful of requests over a fraction of
# a second is noise, however tidy its numbers look.
REPORT_MIN_REQUESTS = 24
REPORT_MIN_DURATION_S = 0.5
# Mean lag behind the schedule above which the load generator, not the server, may be the limit.
CLIENT_LAG_WARN_MS = 10.0
# MLPerf's TEST09: with lengths not forced, a mean output length more than this far (in percent)
# from the dataset's is named, and its trial is not compared (truncated outputs cannot win).
LENGTH_OFF_PERCENT = 10.0
# A trial whose share of completed requests read in one network read reaches this (in percent)
# has latencies the client set, and is not compared; below it, the check names those requests.
ONE_READ_DISTRUST_PERCENT = 10.0
ALL_CLEAR = "Every request of every successful trial completed as requested."
# Columns that say whether `ignore_eos` reached the engine: the workload's wish, and the backend's
# recorded fact; either recorded False means the server chose each output's length.
LENGTH_COLUMNS = ("workload.ignore_eos", rec.BACKEND_IGNORE_EOS)
# `backend.tokenizer=none` (the openai backend): no local tokenizer, every count the server's.
TOKENIZER_COLUMN = "backend.tokenizer"
SERVER_COUNTED = "none"
# Settings a group of flagged trials is described by when all of them share one value.
SHARED_PREFIXES = ("workload.", "backend.", "dataset.")
SIZE_COLUMNS = ("workload.num_requests", "workload.duration_s")
SHARED_SHOWN = 3
# Every column a check reads from a trial's row (`_rows` hands on these only).
CHECKED_COLUMNS = (
    rec.LABEL,
    rec.TRIAL_ID,
    rec.TRIAL_STATUS,
    rec.NUM_REQUESTS,
    rec.FAILED_REQUESTS,
    rec.TOKEN_MISMATCH_REQUESTS,
    rec.INPUT_MISMATCH_REQUESTS,
    rec.INPUT_MISMATCH_TOKENS_MEAN,
    rec.ESTIMATED_OUTPUT_REQUESTS,
    rec.SHORT_OUTPUT_REQUESTS,
    rec.ONE_READ_REQUESTS,
    rec.OUTPUT_LENGTH_OFF_PERCENT,
    rec.STRUCTURED_CHECKED,
    rec.STRUCTURED_VALID_FRACTION,
    rec.CLIENT_LAG_MS_MEAN,
    rec.CLIENT_SATURATED,
    rec.CLIENT_CPU_PERCENT,
    rec.SEND_LAG_MS_P99,
    rec.TOO_SHORT,
    rec.COMPLETED_REQUESTS,
    rec.DURATION_S,
    rec.WORKLOAD_MIN_DURATION_S,
    rec.WORKLOAD_MIN_REQUESTS,
    *LENGTH_COLUMNS,
)


def problem_sections(trials: pd.DataFrame) -> list[Section]:
    """Flagged and failed trials with their reasons, then the environment."""
    failed = trials[trials[rec.TRIAL_STATUS] != rec.STATUS_OK]
    checks = grouped_checks(trials) if pooled(trials) else trial_checks(trials)
    notes = [
        lengths_note(trials),
        unknown_lengths_note(trials),
        counts_note(trials),
        unverified_inputs_note(trials),
        "" if checks else ALL_CLEAR,
    ]
    text = " ".join(filter(None, notes))
    return [
        Section("Request checks", text, items=checks),
        Section(
            "Failed trials",
            f"{len(failed)} trial(s) failed." if len(failed) else "No trial failed.",
            table=(_failed_by_reason if pooled(trials) else _failed)(failed)
            if len(failed)
            else None,
        ),
        Section("Environment", *_environment(trials)),
    ]


def trial_checks(trials: pd.DataFrame) -> tuple[str, ...]:
    """One line per successful trial that deserves a second look, naming it and why."""
    ok = trials[trials[rec.TRIAL_STATUS] == rec.STATUS_OK]
    return tuple(
        f"{row.get(rec.LABEL)} (`{row[rec.TRIAL_ID]}`): " + "; ".join(notes)
        for _, row in _rows(ok)
        if (notes := _trial_notes(row))
    )


def grouped_checks(trials: pd.DataFrame) -> tuple[str, ...]:
    """One line per kind of check that some successful trials failed, for a large sweep.

    "1,020 trials too short to trust: all at workload.num_requests=8 (e.g. a, b, c)": the count,
    the workload settings every one of them shares, and the first few labels; each trial's own
    figures are in the report's table of all trials.
    """
    ok = trials[trials[rec.TRIAL_STATUS] == rec.STATUS_OK]
    kinds: dict[str, list] = {}
    for index, row in _rows(ok):
        for kind, _ in _trial_flags(row):
            kinds.setdefault(kind, []).append(index)
    lines = []
    for kind, rows in sorted(kinds.items(), key=lambda item: -len(item[1])):
        group = trials.loc[rows]
        shared = _shared(group, trials)
        lines.append(f"{len(rows):,} trial(s) {kind}{shared} (e.g. {_names(group)})")
    return tuple(lines)


def _shared(group: pd.DataFrame, trials: pd.DataFrame) -> str:
    """': all at workload.num_requests=8, ...': settings every trial of `group` shares.

    Those that vary over the sweep come first (they say where the group is), then the size of a
    trial (`SIZE_COLUMNS`); settings the whole sweep shares otherwise go unsaid.
    """
    shown = []
    for column in (c for c in group.columns if c.startswith(SHARED_PREFIXES)):
        values = group[column].dropna().unique()
        if len(values) != 1 or group[column].isna().any():
            continue
        varies = trials[column].nunique(dropna=False) > 1
        if varies or column in SIZE_COLUMNS:
            shown.append((not varies, f"{column}={display_text(values[0])}"))
    shown = [text for _, text in sorted(shown, key=lambda item: item[0])[:SHARED_SHOWN]]
    return f": all at {', '.join(shown)}" if shown else ""


def _failed_by_reason(failed: pd.DataFrame) -> pd.DataFrame:
    """Failed trials of a large sweep counted by kind and first line of the message."""
    messages = failed.get(rec.ERROR_MESSAGE, pd.Series(MISSING, index=failed.index)).map(
        lambda m: " ".join(str(m).splitlines()[0].split())[:200] if pd.notna(m) else MISSING
    )
    keys = pd.DataFrame(
        {
            "Error kind": failed.get(rec.ERROR_KIND, MISSING),
            "Message": messages,
            "label": failed.get(rec.LABEL, failed[rec.TRIAL_ID]),
        }
    ).fillna(MISSING)
    table = keys.groupby(["Error kind", "Message"], sort=False).agg(
        Trials=("label", "size"), Examples=("label", lambda v: ", ".join(map(str, v.iloc[:3])))
    )
    return table.reset_index().sort_values("Trials", ascending=False, kind="stable")


def lengths_note(trials: pd.DataFrame) -> str:
    """A sentence naming the trials whose output lengths were not forced; empty if none."""
    unforced = trials[unforced_lengths(trials)]
    if unforced.empty:
        return ""
    return (
        f"Output lengths were not forced in {len(unforced)} of {len(trials)} trial(s) "
        f"({_names(unforced)}): no `ignore_eos` reached the engine (its backend recorded that its "
        "requests carry none, or `workload.ignore_eos=false`), so each output is as long as the "
        "server made it and output tok/s and TPOT rest on the server's choice of lengths."
    )


def unknown_lengths_note(trials: pd.DataFrame) -> str:
    """A sentence naming the successful trials with no record of forcing lengths; empty if none."""
    ok = trials[rec.TRIAL_STATUS] == rec.STATUS_OK
    unknown = trials[ok & ~unforced_lengths(trials) & ~_recorded(trials, rec.BACKEND_IGNORE_EOS)]
    if unknown.empty:
        return ""
    return (
        f"Whether `ignore_eos` reached the engine is not recorded for {len(unknown)} of "
        f"{len(trials)} trial(s) ({_names(unknown)}): their results folder predates the backend "
        f"facts (`{rec.BACKEND_IGNORE_EOS}`), so a short output there may be the model's own end."
    )


def counts_note(trials: pd.DataFrame) -> str:
    """A sentence naming the trials whose token counts are the server's own; empty if none."""
    counted = trials[server_counted(trials)]
    if counted.empty:
        return ""
    return (
        f"Token counts are the server's own (no local tokenizer) in {len(counted)} of "
        f"{len(trials)} trial(s) ({_names(counted)}): input and output lengths are its `usage`; "
        "random prompts were bundled text at about 0.75 words a token, so their lengths only "
        "approximate `dataset.input_len`, and where the server gave only a total, an output's "
        "tokens are spread evenly over its streamed chunks."
    )


def unverified_inputs_note(trials: pd.DataFrame) -> str:
    """A sentence naming the trials whose server did not count their prompts; empty if none."""
    column = trials.get(rec.INPUT_UNVERIFIED_REQUESTS, pd.Series(np.nan, trials.index))
    unverified = trials[pd.to_numeric(column, errors="coerce").fillna(0) > 0]
    if unverified.empty:
        return ""
    return (
        f"Input lengths are unverified in {len(unverified)} of {len(trials)} trial(s) "
        f"({_names(unverified)}): their server reported no prompt count (`usage.prompt_tokens`) "
        "on some requests, so nothing checked that it read the prompts as the client counted them."
    )


def server_counted(trials: pd.DataFrame) -> pd.Series:
    """Per trial: True where no local tokenizer ran (`backend.tokenizer=none`)."""
    column = trials.get(TOKENIZER_COLUMN, pd.Series(None, trials.index, dtype=object))
    return column.eq(SERVER_COUNTED).fillna(False).astype(bool)


def unforced_lengths(trials: pd.DataFrame) -> pd.Series:
    """Per trial: True where `ignore_eos` was not sent, so the server chose output lengths."""
    return pd.Series([_unforced(row) for _, row in _rows(trials)], trials.index, dtype=bool)


def _rows(trials: pd.DataFrame) -> zip:
    """(index, row as a dict of `CHECKED_COLUMNS`) per trial, without a Series per row.

    Only the columns the checks read: a large sweep's summary has some 200 per trial.
    """
    columns = [c for c in dict.fromkeys(CHECKED_COLUMNS) if c in trials]
    return zip(trials.index, trials[columns].to_dict("records"), strict=True)


def _recorded(trials: pd.DataFrame, column: str) -> pd.Series:
    """Per trial: whether `column` holds a value (False where absent or null)."""
    return trials[column].notna() if column in trials else pd.Series(False, trials.index)


def _unforced(row: pd.Series) -> bool:
    return any(row.get(c) is False or row.get(c) is np.False_ for c in LENGTH_COLUMNS)


def _names(trials: pd.DataFrame) -> str:
    """The first five trials' labels (ids where unlabelled), then an ellipsis if there are more."""
    names = ", ".join(trials.get(rec.LABEL, trials[rec.TRIAL_ID]).astype(str).iloc[:5])
    return names + (", ..." if len(trials) > 5 else "")


def _trial_notes(row: pd.Series) -> list[str]:
    """What in one successful trial deserves a second look."""
    return [text for _, text in _trial_flags(row)]


def _trial_flags(row: pd.Series) -> list[tuple[str, str]]:
    """Each check one successful trial failed: its kind (`grouped_checks`), and what it saw."""
    notes = []
    if _positive(failed := row.get(rec.FAILED_REQUESTS)):
        notes.append(
            ("with failed requests", f"{failed:.0f} of {row[rec.NUM_REQUESTS]:.0f} requests failed")
        )
    if _positive(mismatched := row.get(rec.TOKEN_MISMATCH_REQUESTS)):
        notes.append(
            (
                "whose client and server token counts differ",
                f"client and server token counts differ on {mismatched:.0f} request(s)",
            )
        )
    if _positive(prompts := row.get(rec.INPUT_MISMATCH_REQUESTS)):
        notes.append(
            (
                "whose prompts the server counted differently",
                f"the server counted {prompts:.0f} prompt(s) differently from the client "
                f"({_signed(row.get(rec.INPUT_MISMATCH_TOKENS_MEAN))} tokens on average): its "
                "tokenizer or template is not the client's, so the input length is not the "
                "workload's",
            )
        )
    if _positive(estimated := row.get(rec.ESTIMATED_OUTPUT_REQUESTS)):
        notes.append(
            (
                "with estimated output token counts",
                f"output token counts are estimates on {estimated:.0f} request(s): the server's "
                "stream did not count their tokens",
            )
        )
    if _positive(short := row.get(rec.SHORT_OUTPUT_REQUESTS)):
        reason = " (lengths not forced: the server ended them)" if _unforced(row) else ""
        notes.append(
            (
                "with requests shorter than requested",
                f"{short:.0f} request(s) shorter than requested{reason}",
            )
        )
    off = _value(row.get(rec.OUTPUT_LENGTH_OFF_PERCENT))
    structured = _positive(row.get(rec.STRUCTURED_CHECKED))  # its constraint sets the length
    exempt = structured or _value(row.get(rec.TOOL_CALLS_TOTAL)) is not None  # and tool calls
    if _unforced(row) and not exempt and off is not None and abs(off) > LENGTH_OFF_PERCENT:
        notes.append(
            (
                "whose mean output length is off the dataset's",
                f"mean output length {off:+.0f}% off what the dataset asks, with lengths not "
                f"forced (MLPerf's TEST09 allows {LENGTH_OFF_PERCENT:g}%): its speed rests on "
                "outputs of another length than the workload's",
            )
        )
    valid = _value(row.get(rec.STRUCTURED_VALID_FRACTION))
    if structured and valid is not None and valid < 1:
        checked = _value(row.get(rec.STRUCTURED_CHECKED)) or 0
        notes.append(
            (
                "whose structured answers broke their constraint",
                f"{checked * (1 - valid):.0f} of {checked:.0f} answers ({1 - valid:.0%}) broke "
                "the trial's constraint (`structured_error` in requests.parquet says why)",
            )
        )
    if _positive(one_read := row.get(rec.ONE_READ_REQUESTS)):
        completed = _value(row.get(rec.COMPLETED_REQUESTS))
        share = 100.0 * one_read / completed if completed else 100.0
        notes.append(
            (
                "where streams arrived in one read"
                if share >= ONE_READ_DISTRUST_PERCENT
                else "where some streams arrived in one read",
                f"{one_read:.0f} request(s) ({share:.0f}%) arrived whole in one network read "
                "though the server streamed them in chunks: their TTFT is their end-to-end time "
                "(client-bound for them)",
            )
        )
    if _positive(lag := row.get(rec.CLIENT_LAG_MS_MEAN), above=CLIENT_LAG_WARN_MS):
        notes.append(
            (
                "where the client lagged behind schedule",
                f"client lagged {lag:.1f} ms behind schedule on average (client-bound)",
            )
        )
    if _positive(row.get(rec.CLIENT_SATURATED)):
        notes.append(
            (
                "where the load generator saturated",
                f"the load generator saturated ({_client_figures(row)}): the client, not the "
                "server, set the pace",
            )
        )
    if _positive(row.get(rec.TOO_SHORT)) or _below_report_minimum(row):
        notes.append(("too short to trust", f"too short to trust ({_size_figures(row)})"))
    return notes


# The checks whose trials the findings leave out: what they measured is not the server's figure
# (too little of it, the client's pace, or other tokens than the workload's). Each with the few
# words the findings give as the reason.
DISTRUSTING = {
    "too short to trust": "too short",
    "where the load generator saturated": "client-bound",
    "where the client lagged behind schedule": "client-bound",
    "where streams arrived in one read": "client-bound",
    "whose client and server token counts differ": "token counts mismatched",
    "whose mean output length is off the dataset's": "output lengths off",
    "whose prompts the server counted differently": "prompts miscounted",
}


def distrust(trials: pd.DataFrame) -> pd.Series:
    """Per trial: why the findings must not state its figures, or "" when they may.

    The reasons are joined by ", " ("too short, client-bound"); a failed trial gets "", as the
    findings use no failed trial at all.
    """
    reasons = []
    for _, row in _rows(trials):
        if row.get(rec.TRIAL_STATUS) != rec.STATUS_OK:
            reasons.append("")
            continue
        why = dict.fromkeys(DISTRUSTING[k] for k, _ in _trial_flags(row) if k in DISTRUSTING)
        reasons.append(", ".join(why))
    return pd.Series(reasons, index=trials.index, dtype=object)


def too_small(trials: pd.DataFrame) -> pd.Series:
    """Per trial: too short to trust, by its own minimum or the report's (`REPORT_MIN_*`)."""
    return pd.Series(
        [
            row.get(rec.TRIAL_STATUS) == rec.STATUS_OK
            and (_positive(row.get(rec.TOO_SHORT)) or _below_report_minimum(row))
            for _, row in _rows(trials)
        ],
        index=trials.index,
        dtype=bool,
    )


def _below_report_minimum(row: pd.Series) -> bool:
    completed, duration = row.get(rec.COMPLETED_REQUESTS), row.get(rec.DURATION_S)
    few = completed is not None and not pd.isna(completed) and completed < REPORT_MIN_REQUESTS
    brief = duration is not None and not pd.isna(duration) and duration < REPORT_MIN_DURATION_S
    return bool(few or brief)


def _client_figures(row: pd.Series) -> str:
    cpu, lag = row.get(rec.CLIENT_CPU_PERCENT), row.get(rec.SEND_LAG_MS_P99)
    figures = [
        f"client CPU {cpu:.0f}% of a core" if _positive(cpu) else None,
        f"send lag p99 {lag:.1f} ms" if _positive(lag) else None,
    ]
    return ", ".join(filter(None, figures)) or "by its own measurements"


def _size_figures(row: pd.Series) -> str:
    duration, completed = row.get(rec.DURATION_S), row.get(rec.COMPLETED_REQUESTS)
    figures = f"{_number(duration)} s, {_number(completed)} completed requests"
    minimum = row.get(rec.WORKLOAD_MIN_DURATION_S), row.get(rec.WORKLOAD_MIN_REQUESTS)
    if any(_positive(m) for m in minimum):
        figures += f"; minimum {_number(minimum[0])} s, {_number(minimum[1])} requests"
    if _below_report_minimum(row):
        figures += (
            f"; the report wants at least {REPORT_MIN_REQUESTS} requests over "
            f"{REPORT_MIN_DURATION_S:g} s to compare"
        )
    return figures


def _signed(value: object) -> str:
    return f"{float(value):+.1f}" if value is not None and pd.notna(value) else MISSING


def _number(value: object) -> str:
    return f"{float(value):g}" if value is not None and pd.notna(value) else MISSING


def _value(value: object) -> float | None:
    """A number of a trial's row as a float; None where null or absent."""
    return None if value is None or pd.isna(value) else float(value)


def _positive(value: object, above: float = 0.0) -> bool:
    return value is not None and pd.notna(value) and float(value) > above


def _failed(failed: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Trial id": failed[rec.TRIAL_ID],
            "Label": failed.get(rec.LABEL),
            "Error kind": failed.get(rec.ERROR_KIND),
            "Message": failed.get(rec.ERROR_MESSAGE, pd.Series(dtype=str)).map(
                lambda m: " ".join(str(m).split())[:300] if pd.notna(m) else MISSING
            ),
        }
    ).fillna(MISSING)


def _environment(trials: pd.DataFrame) -> tuple[str, tuple[str, ...], pd.DataFrame | None]:
    """Text, items and table of the environment section."""
    env = [c for c in trials.columns if c.startswith(rec.ENV_PREFIX)]
    if not env:
        return "No environment was recorded.", (), None
    rows = [(c.removeprefix(rec.ENV_PREFIX), distinct(trials[c])) for c in env]
    return "", (), pd.DataFrame(rows, columns=["Setting", "Value"]).replace("", MISSING)


def distinct(values: pd.Series) -> str:
    """The distinct non-null values of a column, sorted and comma-separated."""
    return ", ".join(sorted(values.dropna().astype(str).unique()))
