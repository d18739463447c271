"""GPU sampling through NVML: which GPUs, and what survives a failing call (issue 18).

No GPU is here: NVML is simulated by `tests.fake_nvml.FakeNVML`, a stand-in for the `pynvml`
module (the nvidia-ml-py API the sampler calls) that answers for the cards it is given, in NVML's
order, and raises NVML's errors where a real driver does (MIG instances report no utilisation or
power). Everything from `CUDA_VISIBLE_DEVICES` to the rows is the real code.
"""

import logging
import sys
from pathlib import Path

import pytest
import yaml

from sweep.core import records as R
from sweep.core.errors import BackendError
from sweep.measure.telemetry import check_gpu_memory, nvml_source
from tests.fake_nvml import FakeNVML, card

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def nvml(monkeypatch):
    """Install a simulated NVML with the given cards; returns the installer."""

    def install(cards, visible=None, migs=None, order=None):
        fake = FakeNVML(cards, migs)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        for name, value in (("CUDA_VISIBLE_DEVICES", visible), ("CUDA_DEVICE_ORDER", order)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        return fake

    return install


def by_source(rows):
    out = {}
    for source, metric, value in rows:
        out.setdefault(source, {})[metric] = value
    return out


def test_uuid_entries_are_sampled_in_cuda_order(nvml):
    cards = [card("GPU-aaaa-1111", used_mib=100), card("GPU-bbbb-2222", used_mib=200)]
    nvml(cards, visible="GPU-bbbb-2222,0")
    rows = by_source(nvml_source()())
    assert set(rows) == {"gpu0", "gpu1"}
    assert rows["gpu0"][R.GPU_MEMORY_USED_MB] == 200  # CUDA's device 0 is the UUID's card
    assert rows["gpu1"][R.GPU_MEMORY_USED_MB] == 100
    nvml(cards, visible="GPU-bbbb")  # CUDA also takes a unique UUID prefix
    assert by_source(nvml_source()())["gpu0"][R.GPU_MEMORY_USED_MB] == 200


def test_a_mig_instance_is_sampled_for_what_it_reports(nvml):
    mig = card("MIG-cccc-3333", name="NVIDIA A100-SXM4-80GB MIG 3g.40gb", used_mib=300)
    mig["fail"] = {"util", "power"}  # NVML answers NOT_SUPPORTED for a MIG device
    nvml([card("GPU-aaaa-1111")], visible="MIG-cccc-3333", migs={"mig": mig})
    rows = by_source(nvml_source()())
    assert rows == {"gpu0": {R.GPU_MEMORY_USED_MB: 300}}


def test_one_failing_call_drops_only_its_metric(nvml):
    cards = [card("GPU-aaaa-1111", used_mib=100), card("GPU-bbbb-2222", used_mib=200, util=70)]
    cards[0]["fail"] = {"power"}
    nvml(cards)
    rows = by_source(nvml_source()())
    assert rows["gpu0"] == {R.GPU_MEMORY_USED_MB: 100, R.GPU_UTILIZATION_PERCENT: 50}
    assert rows["gpu1"] == {
        R.GPU_MEMORY_USED_MB: 200,
        R.GPU_UTILIZATION_PERCENT: 70,
        R.GPU_POWER_W: 70,
    }


def test_an_invalid_entry_hides_the_devices_after_it_as_cuda_does(nvml):
    nvml([card("GPU-aaaa-1111"), card("GPU-bbbb-2222")], visible="1,GPU-none,0")
    assert set(by_source(nvml_source()())) == {"gpu0"}
    nvml([card("GPU-aaaa-1111")], visible="")
    assert nvml_source() is None


def test_mixed_cards_in_cuda_default_order_are_flagged(nvml, caplog):
    cards = [card("GPU-aaaa-1111", name="NVIDIA A100-SXM4-80GB"), card("GPU-bbbb-2222")]
    nvml(cards, visible="0,1")
    with caplog.at_level(logging.WARNING, logger="sweep.measure.telemetry"):
        assert nvml_source() is not None
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in caplog.text
    caplog.clear()
    nvml(cards, visible="0,1", order="PCI_BUS_ID")  # CUDA's order is NVML's: nothing to say
    with caplog.at_level(logging.WARNING, logger="sweep.measure.telemetry"):
        nvml_source()
    assert caplog.text == ""


# What NVML reports as total memory (MiB) for the card each hardware option describes.
TOTAL_MIB = {"l4": 23034, "t4": 15360, "a100_80g": 81920, "h100": 81559, "h200": 143771}


@pytest.mark.parametrize("name", sorted(TOTAL_MIB))
def test_each_hardware_option_accepts_its_own_card(nvml, name):
    option = yaml.safe_load((REPO / "conf" / "hardware" / f"{name}.yaml").read_text())
    nvml([card("GPU-aaaa-1111", total_mib=TOTAL_MIB[name])])
    check_gpu_memory(option["name"], option["memory_gb"])


def test_a_40gb_a100_is_refused_for_a100_80g(nvml):
    option = yaml.safe_load((REPO / "conf" / "hardware" / "a100_80g.yaml").read_text())
    nvml([card("GPU-aaaa-1111", name="NVIDIA A100-SXM4-40GB", total_mib=40960)])
    with pytest.raises(BackendError) as err:
        check_gpu_memory(option["name"], option["memory_gb"])
    message = str(err.value)
    assert "\n" not in message and err.value.kind == "backend_start_failed"
    assert "a100_80g" in message and "40" in message and "80" in message, message


def test_memory_check_passes_where_nvml_cannot_tell(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML: a CPU machine
    check_gpu_memory("a100_80g", 80)


def test_the_summary_names_the_gpu_the_worker_got_not_device_0(nvml):
    from sweep.worker.environment import worker_environment

    fake = nvml([card("GPU-aaaa", name="NVIDIA L4"), card("GPU-bbbb", name="NVIDIA H100")], "1")
    fake.nvmlSystemGetDriverVersion = lambda: "580.65"
    env = worker_environment()
    assert env["env.gpu_name"] == "NVIDIA H100"
    assert env["env.gpu_driver"] == "580.65"
