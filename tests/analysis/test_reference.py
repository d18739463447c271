"""Published numbers from sweep.yaml matched to measured trials, and their report section."""

import shutil
from pathlib import Path

import pandas as pd
import yaml

from analysis.report.reference import SECTION_TITLE, Reference, load_reference, reference_table
from analysis.report.report import write_report

REF = Path(__file__).resolve().parent / "data" / "ref_sweep"
TRIALS = pd.DataFrame(
    {
        "backend.name": ["hf", "hf", "vllm", "vllm"],
        "backend.quantization": [None, "bnb_8bit", None, None],
        "workload.batch_size": [1, 1, 1, 4],
        "trial_status": ["ok", "ok", "ok", "failed"],
        "error_kind": [None, None, None, "out_of_memory"],
        "output_throughput_tok_s": [10.0, 4.0, 30.0, float("nan")],
        "ttft_ms_mean": [50.0, 80.0, 20.0, float("nan")],
        "label": ["hf-b1", "hf-hf_8bit-b1", "vllm-b1", "vllm-b4"],
        "group_choices": [
            '{"backend": "hf"}',
            '{"backend": "engines/hf_8bit"}',
            '{"backend": "vllm"}',
            '{"backend": "vllm"}',
        ],
    }
)


def table(rows, trials=TRIALS):
    return reference_table(trials, Reference(tuple(rows))).to_dict("records")


def test_rows_match_by_config_values_including_null():
    rows = table(
        [{"backend.name": "hf", "backend.quantization": None, "output_throughput_tok_s": 20}]
    )
    assert rows == [
        {
            "Published for": "backend.name=hf, backend.quantization=—",
            "Metric": "output_throughput_tok_s",
            "Published": "20",
            "Measured": "10",
            "Measured / published": "0.50",
            "Trials": "1",
        }
    ]


def test_seconds_are_read_from_millisecond_columns_and_text_compares_as_text():
    rows = table(
        [
            {"backend.name": "vllm", "workload.batch_size": 1, "ttft_s_mean": 0.04},
            {"backend.name": "vllm", "workload.batch_size": 4, "error_kind": "out_of_memory"},
        ]
    )
    assert (rows[0]["Measured"], rows[0]["Measured / published"]) == ("0.02", "0.50")
    assert (rows[1]["Published"], rows[1]["Measured"]) == ("out_of_memory", "out_of_memory")


def test_unmatched_rows_and_missing_metrics_show_dashes():
    rows = table([{"backend.name": "tgi", "output_throughput_tok_s": 5, "made_up_metric": 1}])
    assert {(r["Trials"], r["Measured"]) for r in rows} == {("0", "—")}


def test_group_keys_match_the_option_each_trial_recorded():
    rows = [
        {"backend": "engines/hf_8bit", "output_throughput_tok_s": 4},
        {"backend": "hf", "output_throughput_tok_s": 10},
        {"backend": "engines/gone", "output_throughput_tok_s": 4},
    ]
    measured = [(r["Measured"], r["Trials"]) for r in table(rows)]
    assert measured == [("4", "1"), ("10", "1"), ("—", "0")]


def test_folders_without_recorded_choices_match_groups_by_label_and_name():
    # A folder written before trials recorded their group choices (main before the layout change).
    rows = [
        {"backend": "engines/hf_8bit", "output_throughput_tok_s": 4},
        {"backend": "vllm", "workload.batch_size": 1, "output_throughput_tok_s": 30},
    ]
    old = TRIALS.drop(columns=["group_choices"])
    assert [(r["Measured"], r["Trials"]) for r in table(rows, old)] == [("4", "1"), ("30", "1")]


def test_report_shows_published_vs_measured_from_sweep_yaml(tmp_path):
    results = tmp_path / "ref_sweep"
    shutil.copytree(REF, results)
    meta = {
        "command": "python -m sweep +experiment=quickstart",
        "config": {
            "reference": [
                {"backend.name": "hf", "workload.batch_size": 2, "output_throughput_tok_s": 16},
                {"backend": "sim", "output_throughput_tok_s": 1},
            ]
        },
    }
    (results / "sweep.yaml").write_text(yaml.safe_dump(meta))
    reference = load_reference(results)
    assert len(reference.rows) == 2
    text = write_report(results).report_md.read_text()
    section = text.split(f"## {SECTION_TITLE}")[1]
    row = "| backend.name=hf, workload.batch_size=2 | output_throughput_tok_s | 16 | 8 | 0.50 |"
    assert row in section
    assert "| backend=sim | output_throughput_tok_s | 1 | — | — | 0 |" in section


def test_no_sweep_yaml_or_no_reference_means_no_section(tmp_path):
    assert load_reference(tmp_path) is None
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"config": {"reference": None}}))
    assert load_reference(tmp_path) is None
