"""Tool-calling sessions: per configuration, the calls, their validity, and an agent's waits.

Reads the summary of trials whose sessions offered tools (`dataset.tools`; `sweep.core.summary`
from the turns' records, `sweep.loadgen.sessions`): the calls the replies made, the share of
replies with calls whose every call named a function of the set with arguments valid against its
schema, the median time to a call's complete arguments, the median whole session, and the share
of the input the server's prefix cache held (where its usage says). The findings name each
configuration's figures (its latencies withheld where the request checks distrust its trials:
`analysis.report.flags.distrust`) and a configuration whose calls were invalid.
"""

from __future__ import annotations

import pandas as pd

from analysis.read.columns import numeric_column, series_labels, text_column
from analysis.report.flags import distrust
from analysis.report.sections import Section, formatted
from sweep.core import records as rec

CONFIGURATION = "configuration"
TOOLS, CHOICE = "dataset.tools", "dataset.tool_choice"


def tool_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration whose sessions offered tools: calls, validity, waits, cache.

    Counts add up over the configuration's trials; the validity is the calls-weighted mean, the
    times and the cached share the mean of the trials' own.
    """
    if rec.TOOL_CALLS_TOTAL not in trials:
        return pd.DataFrame()
    ok = trials[trials[rec.TOOL_CALLS_TOTAL].notna()]
    ok = ok[ok.get(rec.TRIAL_STATUS) == rec.STATUS_OK]
    if ok.empty:
        return pd.DataFrame()
    calls = numeric_column(ok, rec.TOOL_CALLS_TOTAL)
    frame = pd.DataFrame(
        {
            CONFIGURATION: series_labels(ok),
            "tools": text_column(ok, TOOLS) + " (" + text_column(ok, CHOICE) + ")",
            "sessions": numeric_column(ok, rec.SESSIONS),
            "requests": numeric_column(ok, rec.COMPLETED_REQUESTS),
            "calls": calls,
            "valid_calls": calls * numeric_column(ok, rec.TOOL_ARGS_VALID_FRACTION).fillna(0.0),
            "call_ms": numeric_column(ok, rec.TOOL_CALL_MS_P50),
            "session_s": numeric_column(ok, rec.SESSION_S_P50),
            "cached": numeric_column(ok, rec.CACHED_INPUT_PERCENT),
            "distrusted": distrust(ok),
        },
        index=ok.index,
    )
    rows = (
        frame.groupby(CONFIGURATION, sort=False)
        .agg(
            tools=("tools", "first"),
            sessions=("sessions", "sum"),
            requests=("requests", "sum"),
            calls=("calls", "sum"),
            valid_calls=("valid_calls", "sum"),
            call_ms=("call_ms", "mean"),
            session_s=("session_s", "mean"),
            cached=("cached", "mean"),
            distrusted=("distrusted", lambda why: ", ".join(dict.fromkeys(w for w in why if w))),
        )
        .reset_index()
    )
    rows["valid_fraction"] = rows["valid_calls"] / rows["calls"].where(rows["calls"] > 0)
    return rows


def tool_findings(trials: pd.DataFrame) -> list[str]:
    """The findings' sentences on tool-calling sessions; none without such a trial."""
    rows = tool_rows(trials)
    lines = []
    for _, row in rows.iterrows():
        head = (
            f"**{row[CONFIGURATION]}** ({row['tools']}): {row['calls']:.0f} tool calls in "
            f"{row['requests']:.0f} replies of {row['sessions']:.0f} sessions"
        )
        if row["calls"] > 0:
            head += f", {row['valid_fraction']:.0%} with valid arguments"
        waits = []
        if pd.notna(row["call_ms"]):
            waits.append(f"a call's arguments complete {row['call_ms']:,.0f} ms after it is sent")
        if pd.notna(row["session_s"]):
            waits.append(f"a session takes {row['session_s']:,.2f} s")
        if row["distrusted"]:
            lines.append(f"{head} (latencies not stated: trials {row['distrusted']}).")
        else:
            lines.append(f"{head}; median: {', '.join(waits)}." if waits else f"{head}.")
        if row["calls"] > 0 and row["valid_fraction"] < 1:
            broke = row["calls"] - row["valid_calls"]
            lines.append(
                f"**{row[CONFIGURATION]}**'s model called its tools invalidly in {broke:.0f} "
                "replies (`tool_args_error` in requests.parquet says why)."
            )
    return lines


def tool_sections(trials: pd.DataFrame) -> list[Section]:
    """The table of tool-calling sessions; nothing without such a trial."""
    rows = tool_rows(trials)
    if rows.empty:
        return []
    table = pd.DataFrame(
        {
            "Configuration": rows[CONFIGURATION],
            "Tools (choice)": rows["tools"],
            "Sessions": formatted(rows["sessions"], ".0f"),
            "Replies": formatted(rows["requests"], ".0f"),
            "Tool calls": formatted(rows["calls"], ".0f"),
            "Valid calls (%)": formatted(rows["valid_fraction"], ".1f", scale=100.0),
            "Call complete p50 (ms)": formatted(rows["call_ms"], ",.1f"),
            "Session p50 (s)": formatted(rows["session_s"], ",.2f"),
            "Cached input (%)": formatted(rows["cached"], ".1f"),
        }
    )
    text = (
        "Sessions whose requests offer tools (`dataset.tools`): a reply's tool calls are "
        "answered, after the tool's latency, by tool results in the next turn, so the prompt "
        "grows as an agent's does. Each call is checked against its function's schema after "
        "the load (`tool_args_valid`, `tool_args_error` in requests.parquet); *Call complete* "
        "is from sending the request to the call's last token, what an agent waits before it "
        "can run the tool; *Cached input* is the share of the prompts the server's prefix "
        "cache held, where its usage says (vLLM: `--enable-prompt-tokens-details`)."
    )
    return [Section("Tool-calling sessions", text, table=table)]
