"""A trial's energy: NVML's energy counter, integrated GPU power, RAPL, or "not measured".

No GPU and no readable RAPL are here, so both are stood in for: NVML by `tests.fake_nvml.FakeNVML`
(the nvidia-ml-py calls the sampler makes: the total-energy counter in mJ, power in mW), handed
to `nvml_source`; RAPL by a powercap folder in `tmp_path` laid out as Linux's
(`intel-rapl:N/{name,energy_uj,max_energy_range_uj}`, subzones inside), handed to `rapl_source`.
The real sources read them at chosen times between which the test moves the meters; the rows
go through the real `summarize`, which must find the joules the meters moved by.
"""

import json

import pandas as pd
import pyarrow as pa
import pytest

from sweep.core import records as R
from sweep.core.summary import summarize
from sweep.loadgen.clock import now_s
from sweep.measure.powercap import rapl_source
from sweep.measure.telemetry import Sampler, nvml_source, process_source
from tests.fake_nvml import FakeNVML, card

ENERGY_COLUMNS = (
    R.ENERGY_J,
    R.ENERGY_J_PER_OUTPUT_TOKEN,
    R.ENERGY_J_PER_REQUEST,
    R.ENERGY_WH_PER_1M_OUTPUT,
    R.MEAN_POWER_W,
)


def requests(spans, output_tokens=50):
    """Completed requests sent and ended at `spans` (seconds on the trial's clock)."""
    rows = [
        {
            R.TRIAL_ID: "t",
            R.REQUEST_IDX: i,
            R.SENT_S: sent,
            R.FIRST_TOKEN_S: sent + 0.1,
            R.END_S: end,
            R.TTFT_S: 0.1,
            R.E2E_S: end - sent,
            R.ITL_S: [],
            R.INPUT_TOKENS: 16,
            R.OUTPUT_TOKENS: output_tokens,
            R.STATUS: R.STATUS_OK,
            R.IN_WINDOW: True,
        }
        for i, (sent, end) in enumerate(spans)
    ]
    return pa.Table.from_pylist(rows, schema=R.REQUESTS_SCHEMA).to_pandas()


def sampled(source, readings):
    """Timeseries rows of `source` polled at each time of `readings`, after its meter update."""
    rows = []
    for t, move in readings:
        move()
        rows += [
            {R.TRIAL_ID: "t", R.T_S: t, R.SOURCE: s, R.METRIC: m, R.VALUE: v}
            for s, m, v in source()
        ]
    return pd.DataFrame(rows, columns=R.TIMESERIES_SCHEMA.names)


def setter(device, key, value):
    return lambda: device.__setitem__(key, value)


def summary_of(timeseries, spans=((1.0, 2.0), (2.0, 3.0))):
    return summarize(requests(spans), num_gpus=1, price_per_hour=1.0, timeseries=timeseries)


def test_the_gpus_energy_counter_gives_the_joules_of_the_window():
    gpu = card("GPU-aaaa", energy_mj=5_000_000, power_mw=70_000)
    source = nvml_source(FakeNVML([gpu]))
    # 150 W by the counter (the power reading says 70 W and must not be used): 5000 J + 150 t.
    timeseries = sampled(
        source,
        [(t, setter(gpu, "energy_mj", 5_000_000 + 150_000 * t)) for t in (0.0, 2.0, 4.0)],
    )
    row = summary_of(timeseries)  # window 1 s .. 3 s, 2 requests of 50 tokens
    assert row[R.ENERGY_METHOD] == R.ENERGY_NVML_COUNTER
    assert row[R.ENERGY_J] == pytest.approx(300.0)
    assert row[R.ENERGY_J_PER_OUTPUT_TOKEN] == pytest.approx(3.0)
    assert row[R.ENERGY_J_PER_REQUEST] == pytest.approx(150.0)
    assert row[R.ENERGY_WH_PER_1M_OUTPUT] == pytest.approx(3.0 / 3600 * 1e6)
    assert row[R.MEAN_POWER_W] == pytest.approx(150.0)
    assert json.loads(row[R.ENERGY_DEVICES]) == {
        "gpu0": {"j": pytest.approx(300.0), "method": R.ENERGY_NVML_COUNTER}
    }


def test_a_gpu_without_the_counter_has_its_power_samples_integrated():
    gpu = card("GPU-aaaa", energy_mj=None, power_mw=100_000)  # before Volta: no counter
    source = nvml_source(FakeNVML([gpu]))
    timeseries = sampled(
        source,
        [(0.0, setter(gpu, "power", 100_000)), (2.0, setter(gpu, "power", 200_000))]
        + [(4.0, setter(gpu, "power", 200_000))],
    )
    assert R.ENERGY_COUNTER_J not in set(timeseries[R.METRIC])
    row = summary_of(timeseries)
    # 1 s .. 2 s: from 150 W (halfway between the samples) to 200 W, then 200 W to 3 s.
    assert row[R.ENERGY_METHOD] == R.ENERGY_POWER_INTEGRAL
    assert row[R.ENERGY_J] == pytest.approx(175.0 + 200.0)
    assert row[R.MEAN_POWER_W] == pytest.approx(187.5)


def test_each_gpu_is_measured_its_own_way_and_all_are_summed():
    new = card("GPU-aaaa", energy_mj=0, power_mw=1)
    old = card("GPU-bbbb", energy_mj=None, power_mw=50_000)
    source = nvml_source(FakeNVML([new, old]))
    timeseries = sampled(source, [(t, setter(new, "energy_mj", 100_000 * t)) for t in (0, 2, 4)])
    row = summary_of(timeseries)
    assert row[R.ENERGY_METHOD] == "nvml_energy_counter+nvml_power_integral"
    assert row[R.ENERGY_J] == pytest.approx(200.0 + 100.0)  # 100 W and 50 W over 2 s
    devices = json.loads(row[R.ENERGY_DEVICES])
    assert devices["gpu0"]["j"] == pytest.approx(200.0)
    assert devices["gpu1"] == {"j": pytest.approx(100.0), "method": R.ENERGY_POWER_INTEGRAL}


def test_a_gpu_of_the_task_without_any_reading_leaves_the_total_not_measured():
    measured = card("GPU-aaaa", energy_mj=0)
    mig = card("MIG-cccc", energy_mj=None)
    mig["fail"] = {"util", "power"}  # a MIG instance: memory only
    fake = FakeNVML([measured], migs={"mig": mig})
    timeseries = pd.concat(
        [
            sampled(
                nvml_source(fake), [(t, setter(measured, "energy_mj", 1000 * t)) for t in (0, 4)]
            ),
            sampled(lambda: [("gpu1", R.GPU_MEMORY_USED_MB, 300.0)], [(0.0, lambda: None)]),
        ]
    )
    row = summary_of(timeseries)
    assert all(row[c] is None for c in ENERGY_COLUMNS)  # a partial sum would look right
    assert row[R.ENERGY_METHOD] == R.ENERGY_NOT_MEASURED
    assert json.loads(row[R.ENERGY_DEVICES])["gpu1"] == {
        "j": None,
        "method": R.ENERGY_NOT_MEASURED,
    }


def test_window_edges_beyond_the_counters_readings_are_reached_at_their_mean_power():
    gpu = card("GPU-aaaa", energy_mj=0, power_mw=80_000)
    readings = [(t, setter(gpu, "energy_mj", 120_000 * t)) for t in (1.5, 2.0, 2.5)]
    row = summary_of(sampled(nvml_source(FakeNVML([gpu])), readings))  # window 1 s .. 3 s
    assert row[R.ENERGY_METHOD] == R.ENERGY_NVML_COUNTER
    assert row[R.ENERGY_J] == pytest.approx(240.0)  # 120 W over 2 s; power (80 W) unused


def test_a_gpu_with_one_counter_reading_has_its_power_integrated():
    gpu = card("GPU-aaaa", energy_mj=0, power_mw=80_000)
    row = summary_of(sampled(nvml_source(FakeNVML([gpu])), [(2.0, lambda: None)]))
    assert row[R.ENERGY_METHOD] == R.ENERGY_POWER_INTEGRAL
    assert row[R.ENERGY_J] == pytest.approx(160.0)


def zone(folder, name, energy_uj, max_uj=1_000_000_000):
    folder.mkdir(parents=True)
    (folder / "name").write_text(f"{name}\n")
    (folder / "energy_uj").write_text(f"{energy_uj}\n")
    (folder / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return folder / "energy_uj"


def test_rapl_counters_are_unwrapped_and_only_packages_and_dram_count(tmp_path):
    package = zone(tmp_path / "intel-rapl:0", "package-0", 900_000_000)
    dram = zone(tmp_path / "intel-rapl:0" / "intel-rapl:0:1", "dram", 0)
    # Counted elsewhere already: the cores (inside the package), the platform (holds the
    # packages) and the package again through MMIO.
    zone(tmp_path / "intel-rapl:0" / "intel-rapl:0:0", "core", 0)
    zone(tmp_path / "intel-rapl:1", "psys", 0)
    zone(tmp_path / "intel-rapl-mmio:0", "package-0", 0)
    source = rapl_source(tmp_path)

    def move(package_uj, dram_uj):
        return lambda: (package.write_text(str(package_uj)), dram.write_text(str(dram_uj)))

    # The package's counter wraps at 1 kJ between 0 s and 2 s: 200 J each 2 s; DRAM 10 J.
    timeseries = sampled(
        source,
        [
            (0.0, move(900_000_000, 0)),
            (2.0, move(100_000_000, 10_000_000)),
            (4.0, move(300_000_000, 20_000_000)),
        ],
    )
    assert set(timeseries[R.SOURCE]) == {"rapl:package-0", "rapl:package-0/dram"}
    row = summary_of(timeseries)
    assert row[R.ENERGY_METHOD] == R.ENERGY_RAPL
    assert row[R.ENERGY_J] == pytest.approx(200.0 + 10.0)
    assert json.loads(row[R.ENERGY_DEVICES])["rapl:package-0"]["j"] == pytest.approx(200.0)


def test_without_nvml_or_powercap_energy_is_not_measured_never_zero(tmp_path):
    (tmp_path / "intel-rapl").mkdir()  # the control type's folder, no zone under it
    assert rapl_source(tmp_path) is None
    assert rapl_source(tmp_path / "absent") is None
    timeseries = sampled(process_source(), [(0.0, lambda: None), (4.0, lambda: None)])
    for samples in (timeseries, None):
        row = summary_of(samples)
        assert all(row[c] is None for c in ENERGY_COLUMNS), row
        assert row[R.ENERGY_METHOD] == R.ENERGY_NOT_MEASURED
        assert row[R.ENERGY_DEVICES] is None


def test_a_trial_without_completed_requests_has_no_energy_figure():
    gpu = card("GPU-aaaa", energy_mj=0)
    timeseries = sampled(nvml_source(FakeNVML([gpu])), [(0.0, lambda: None), (4.0, lambda: None)])
    row = summarize(requests([]), num_gpus=1, price_per_hour=1.0, timeseries=timeseries)
    assert row[R.ENERGY_J] is None and row[R.ENERGY_METHOD] == R.ENERGY_NOT_MEASURED


def test_counters_are_read_as_the_sampler_starts_not_only_after_an_interval():
    polled = []

    def plain():
        polled.append(now_s())
        return [("process", R.PROCESS_RSS_MB, 1.0)]

    counter = nvml_source(FakeNVML([card("GPU-aaaa", energy_mj=0)]))
    with Sampler([(counter, 60.0), (plain, 60.0)], now_s()) as sampler:  # no interval passes
        pass
    gpu_times = {t for t, s, m, _ in sampler.rows if m == R.ENERGY_COUNTER_J and s == "gpu0"}
    assert len(gpu_times) == 2  # as the block started and as it ended
    assert len(polled) == 1  # only as it ended
