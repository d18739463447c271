"""Energy in the report: beside USD per 1M tokens, its own section, "not measured" said in words.

The reference sweep (tests/analysis/data/ref_sweep) was written before energy was recorded; here
its rows get the energy columns a worker writes (`sweep.core.energy`): a vLLM trial measured
by its GPU's counter, the others not measured; the report is written from them by the real code.
"""

from pathlib import Path

import pytest

from analysis.read.load import load_summary
from analysis.report.report import main_table, save_report
from sweep.core import records as rec

REF = Path(__file__).resolve().parent / "data" / "ref_sweep"
MEASURED, UNMEASURED = "vllm_server c=1", "hf bs=1"


@pytest.fixture
def summary():
    frame = load_summary(REF)
    by_label = frame.set_index(rec.LABEL)
    assert by_label.loc[[MEASURED, UNMEASURED], rec.TRIAL_STATUS].eq(rec.STATUS_OK).all()
    measured = {
        rec.ENERGY_J: 420.0,
        rec.ENERGY_J_PER_OUTPUT_TOKEN: 0.35,
        rec.ENERGY_J_PER_REQUEST: 35.0,
        rec.ENERGY_WH_PER_1M_OUTPUT: 0.35 / 3600 * 1e6,
        rec.MEAN_POWER_W: 210.0,
        rec.ENERGY_METHOD: rec.ENERGY_NVML_COUNTER,
    }
    for column, value in measured.items():
        frame[column] = [value if label == MEASURED else None for label in frame[rec.LABEL]]
    frame.loc[frame[rec.LABEL] != MEASURED, rec.ENERGY_METHOD] = rec.ENERGY_NOT_MEASURED
    return frame


def test_the_main_table_puts_wh_per_1m_tokens_beside_usd(summary):
    table = main_table(summary).set_index("Trial")
    headers = list(table.columns)
    assert headers.index("Wh / 1M output tok") == headers.index("USD / 1M output tok") + 1
    assert table.loc[MEASURED, "Wh / 1M output tok"] == "97.22"
    assert table.loc[UNMEASURED, "Wh / 1M output tok"] == "not measured"
    old = main_table(load_summary(REF))  # written before energy: unknown, not "not measured"
    assert set(old["Wh / 1M output tok"]) == {"—"}


def test_the_energy_section_lists_each_trial_with_its_method(summary, tmp_path):
    text = save_report(summary, tmp_path, "energy", options=None).report_md.read_text()
    section = text.split("## Energy", 1)[1].split("\n## ", 1)[0]
    rows = {
        line.split("|")[1].strip(): line
        for line in section.splitlines()
        if "| vllm" in line or "| hf" in line
    }
    assert "NVML energy counter" in rows[MEASURED]
    assert "420.0" in rows[MEASURED] and "0.35" in rows[MEASURED] and "210.0" in rows[MEASURED]
    assert rows[UNMEASURED].count("not measured") == 6  # the method and every figure
    assert " 0.0 " not in rows[UNMEASURED]


def test_a_sweep_measured_nowhere_says_so_in_one_line(summary, tmp_path):
    summary[rec.ENERGY_METHOD] = rec.ENERGY_NOT_MEASURED
    for column in (rec.ENERGY_J, rec.ENERGY_WH_PER_1M_OUTPUT, rec.MEAN_POWER_W):
        summary[column] = None
    text = save_report(summary, tmp_path, "energy", options=None).report_md.read_text()
    section = text.split("## Energy", 1)[1].split("\n## ", 1)[0]
    assert "Not measured" in section and "|" not in section


def test_results_from_before_energy_have_no_energy_section(tmp_path):
    text = save_report(load_summary(REF), tmp_path, "old", options=None).report_md.read_text()
    assert "## Energy" not in text
