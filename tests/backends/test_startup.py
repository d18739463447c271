"""A launched server's start-up by phase: the log's lines stamped as they appear, split, reported.

The stamping and the split are checked on a log file written here between polls at set times
(no clock read); vLLM's lines are the messages of vLLM 0.32's source as its logger prints them.
The sim's start is timed for real through the trial runner, and the report shows one row per
deployment.
"""

import pandas as pd
import pytest

from analysis.report.report import write_report
from analysis.report.startup_table import startup_table
from backends.llamacpp_server import LLAMACPP_STARTUP
from backends.process.startup import LogWatch, StartupLines, startup_columns
from backends.sglang_server import SGLANG_STARTUP
from backends.tgi import TGI_STARTUP
from backends.vllm_server import VLLM_STARTUP
from sweep.core import records as R
from tests.helpers import run_sweep_here, table

LINES = StartupLines(
    ends={R.START_PROCESS_S: "^loading", R.START_LOAD_S: "^loaded", R.START_ENGINE_S: "^ready"}
)
# What vLLM 0.32's CPU server printed (engine core lines carry its process's prefix).
VLLM_LOG = [
    "(APIServer pid=10) INFO 11-29 06:30:01 [api_server.py:1] vLLM API server version 0.32.0",
    "(EngineCore pid=11) INFO 11-29 06:30:09 [cpu_model_runner.py:68] Starting to load model "
    "/cache/tiny...",
    "(EngineCore pid=11) INFO 11-29 06:30:10 [default_loader.py:502] Loading weights took "
    "0.42 seconds",
    "(EngineCore pid=11) INFO 11-29 06:30:11 [backends.py:398] Compiling a graph for compile "
    "range (1, 2048) takes 6.10 s",
    "(EngineCore pid=11) INFO 11-29 06:30:19 [core.py:396] init engine (profile, create kv "
    "cache, warmup model) took 9.31 s (compilation: 7.25 s)",
    "(APIServer pid=10) INFO:     Application startup complete.",
]


def watched(tmp_path, writes):
    """A LogWatch over a file that gains `text` before each poll at `t` (seconds after t0=100)."""
    log = tmp_path / "server.log"
    log.write_text("left by an earlier launch\n")
    watch = LogWatch(log, t0=100.0)
    for t, text in writes:
        with open(log, "a") as f:
            f.write(text)
        watch.poll(100.0 + t)
    return watch


def test_lines_are_stamped_when_first_seen_and_a_partial_line_waits_for_its_end(tmp_path):
    watch = watched(tmp_path, [(1.0, "loading\n"), (2.5, "loaded\nrea"), (3.0, ""), (4.0, "dy\n")])
    assert watch.lines == [(1.0, "loading"), (2.5, "loaded"), (4.0, "ready")]  # not the old line


def test_the_phases_run_from_line_to_line_and_add_up_to_the_whole_start(tmp_path):
    watch = watched(tmp_path, [(1.0, "loading\n"), (2.5, "loaded\n"), (4.0, "ready\n")])
    columns = startup_columns(LINES, watch.lines, total_s=5.0)
    assert [columns[p] for p in R.START_PHASES] == [1.0, 1.5, 1.5, 1.0]
    assert columns[R.SERVER_START_S] == 5.0 and columns[R.START_CACHE] is None
    assert all(columns[c] is None for c in R.START_REPORTED)  # LINES reports nothing


def test_a_phase_the_log_did_not_mark_is_merged_into_the_next(tmp_path):
    watch = watched(tmp_path, [(1.0, "loading\n"), (4.0, "ready\n")])
    columns = startup_columns(LINES, watch.lines, total_s=5.0)
    assert [columns[p] for p in R.START_PHASES] == [1.0, None, 3.0, 1.0]
    assert startup_columns(None, watch.lines, 5.0) == {R.SERVER_START_S: 5.0}


def test_vllms_own_lines_give_its_phases_durations_and_a_cold_cache(tmp_path):
    times = [0.5, 8.6, 9.7, 10.9, 19.2, 19.9]
    watch = watched(tmp_path, [(t, line + "\n") for t, line in zip(times, VLLM_LOG, strict=True)])
    columns = startup_columns(VLLM_STARTUP, watch.lines, total_s=20.0)
    assert [columns[p] for p in R.START_PHASES] == pytest.approx([8.6, 1.1, 9.5, 0.8])
    assert columns[R.START_WEIGHTS_S] == 0.42 and columns[R.START_ENGINE_REPORTED_S] == 9.31
    assert columns[R.START_COMPILE_S] == 7.25 and columns[R.START_GRAPHS_S] is None
    assert columns[R.START_CACHE] == R.CACHE_COLD


def test_a_warm_vllm_start_loads_its_compiled_graphs(tmp_path):
    warm = [
        "(EngineCore pid=11) INFO 11-29 06:31:02 [decorators.py:319] Directly load AOT "
        "compilation from path /cache/torch_compile_cache/torch_aot_compile/abc/rank_0_0/model",
        "(EngineCore pid=11) INFO 11-29 06:31:05 [monitor.py:20] torch.compile took 1.20 s in "
        "total",
        "(EngineCore pid=11) INFO 11-29 06:31:06 [gpu_model_runner.py:6582] Graph capturing "
        "finished in 4 secs, took 0.31 GiB",
    ]
    watch = watched(tmp_path, [(1.0, "\n".join(warm) + "\n")])
    columns = startup_columns(VLLM_STARTUP, watch.lines, total_s=2.0)
    assert columns[R.START_CACHE] == R.CACHE_WARM
    assert columns[R.START_COMPILE_S] == 1.2 and columns[R.START_GRAPHS_S] == 4.0


def test_a_cache_it_could_not_load_is_stale(tmp_path):
    lines = [
        "(Worker pid=3) WARNING 11-29 07:47:35 [decorators.py:333] [backbone] Compiling model "
        "again due to a load failure from /cache/torch_compile_cache/torch_aot_compile/e85c",
        "(Worker pid=3) INFO 11-29 07:47:43 [decorators.py:743] [backbone] saved AOT compiled "
        "function to /cache/torch_compile_cache/torch_aot_compile/e85c",
    ]
    watch = watched(tmp_path, [(1.0, "\n".join(lines) + "\n")])
    assert startup_columns(VLLM_STARTUP, watch.lines, 2.0)[R.START_CACHE] == R.CACHE_STALE


def test_llama_cpps_lines_give_its_phases(tmp_path):
    """llama-cpp-python's server, as its log printed them on the tiny model's GGUF."""
    log = [
        (0.4, "llama_model_loader: loaded meta data with 27 key-value pairs and 21 tensors\n"),
        (0.5, "load_tensors: loading model tensors, this can take a while... (load_mode = mmap)\n"),
        (0.7, "llama_context: constructing llama_context\n"),
        (0.9, "llama_kv_cache: size =    0.25 MiB (   512 cells,   2 layers,  1/1 seqs)\n"),
        (1.1, "INFO:     Started server process [2954]\n"),
        (1.1, "INFO:     Uvicorn running on http://127.0.0.1:54195 (Press CTRL+C to quit)\n"),
    ]
    columns = startup_columns(LLAMACPP_STARTUP, watched(tmp_path, log).lines, total_s=1.3)
    assert [columns[p] for p in R.START_PHASES] == pytest.approx([0.4, 0.3, 0.4, 0.2])
    assert columns[R.START_CACHE] is None and columns[R.START_WEIGHTS_S] is None


def test_sglangs_lines_give_its_phases_and_its_own_times(tmp_path):
    """SGLang's lines as its releases print them (GPU only: not run here); both capture lines."""
    log = [
        (3.0, "[2026-05-15 08:39:10 TP0] Load weight begin. avail mem=78.50 GB\n"),
        (21.0, "[2026-05-15 08:39:28 TP0] Load weight end. elapsed=17.92 s, type=LlamaForCausalLM, "
         "dtype=torch.bfloat16, avail mem=62.08 GB, mem usage=16.41 GB.\n"),
        (23.0, "[2026-05-15 08:39:30 TP0] KV Cache is allocated. #tokens: 549277\n"),
        (49.0, "[2026-05-15 08:39:56 TP0] Capture cuda graph end. Time elapsed: 26.12 s. "
         "mem usage=1.93 GB. avail mem=8.16 GB.\n"),
        (50.0, "INFO:     Uvicorn running on http://127.0.0.1:30000 (Press CTRL+C to quit)\n"),
    ]  # fmt: skip
    columns = startup_columns(SGLANG_STARTUP, watched(tmp_path, log).lines, total_s=52.0)
    assert [columns[p] for p in R.START_PHASES] == pytest.approx([3.0, 18.0, 29.0, 2.0])
    assert columns[R.START_WEIGHTS_S] == 17.92 and columns[R.START_GRAPHS_S] == 26.12
    later = [(1.0, "[2026-08-17 TP0] Capture target decode CUDA graph end. elapsed=16.40 s\n")]
    (tmp_path / "later").mkdir()
    columns = startup_columns(SGLANG_STARTUP, watched(tmp_path / "later", later).lines, 2.0)
    assert columns[R.START_GRAPHS_S] == 16.40


def test_tgis_lines_give_its_phases_and_the_shards_time(tmp_path):
    """TGI's launcher and router (docker only: not run here)."""
    log = [
        (4.0, "2024-03-04T16:37:46.1Z  INFO download: text_generation_launcher: Starting download "
         "process.\n"),
        (6.0, "2024-03-04T16:37:46.5Z  INFO shard-manager: text_generation_launcher: Starting "
         "shard rank=0\n"),
        (29.0, "2024-03-04T16:38:09.4Z  INFO shard-manager: text_generation_launcher: Shard ready "
         "in 22.918174777s rank=0\n"),
        (29.2, "2024-03-04T16:38:09.5Z  INFO text_generation_launcher: Starting Webserver\n"),
        (41.0, "2024-03-04T16:38:21.0Z  INFO text_generation_router: router/src/main.rs:512: "
         "Connected\n"),
    ]  # fmt: skip
    columns = startup_columns(TGI_STARTUP, watched(tmp_path, log).lines, total_s=41.5)
    assert [columns[p] for p in R.START_PHASES] == pytest.approx([6.0, 23.0, 12.0, 0.5])
    assert columns[R.START_WEIGHTS_S] == pytest.approx(22.918174777)


def test_lines_that_name_no_phase_are_refused():
    with pytest.raises(ValueError, match="server_start_api_s"):
        StartupLines(ends={R.START_API_S: "never: the last phase ends at the health check"})


def test_each_sim_deployment_records_its_start_and_the_report_tables_them(tmp_path):
    collected = []
    out = run_sweep_here(
        tmp_path,
        [
            "backend=sim",
            "sweep.name=startup_sim",
            "+sweep.grid={backend.max_num_seqs: [2, 4]}",
            "workload=closed_loop",
            "workload.num_requests=4",
            "workload.warmup_requests=0",
            "workload.output_len=4",
            "dataset.input_len=16",
        ],
        collected,
    )
    summaries = pd.concat([table(files, "summary") for files in collected])
    assert summaries[R.DEPLOYMENT_ID].nunique() == 2
    for _, row in summaries.iterrows():
        phases = [row[p] for p in R.START_PHASES]
        assert row[R.SERVER_START_S] > 0 and row[R.START_PROCESS_S] > 0  # its line was seen
        assert sum(p for p in phases if pd.notna(p)) == pytest.approx(row[R.SERVER_START_S])
    rows = startup_table(summaries)
    assert len(rows) == 2
    assert list(rows.columns[:3]) == ["Deployment", "Start-up (s)", "Process (s)"]
    assert {"max_num_seqs=2", "max_num_seqs=4"} == {d.split()[-1] for d in rows["Deployment"]}
    report = write_report(out).report_md.read_text()
    section = report.split("## Server start-up", 1)[1].split("\n## ", 1)[0]
    assert "max_num_seqs=2" in section and "max_num_seqs=4" in section
