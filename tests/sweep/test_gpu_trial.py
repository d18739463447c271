"""A trial on a real GPU, and the NVML readings its energy figures come from.

Marked `gpu`: run on the device machine (`pytest -m gpu`), deselected by `scripts/test.sh`.
The CPU tests check the sampler against `tests.fake_nvml`, which answers as the nvidia-ml-py
API is documented to; here the real driver answers. That machine has torch and transformers but
no Ray, so the deployment runs in this process through `sweep.worker.trial.run_deployment`, the
function a deployment's Ray task runs (`sweep.driver.driver._deployment_task`), with the worker's
environment as that task computes it.
"""

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from sweep.core import records as R
from sweep.core.energy import device_energy
from sweep.core.errors import BackendError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu

# Hardware options (conf/hardware) by the words NVML's card name holds.
REPO = Path(__file__).resolve().parents[2]
HARDWARE_BY_NAME = {"H200": "h200", "H100": "h100", "A100": "a100_80g", "L4": "l4", "T4": "t4"}
OUTPUT_LEN = 32
NUM_REQUESTS = 16


@pytest.fixture(scope="module")
def nvml():
    from sweep.measure.telemetry import nvml_module

    module = nvml_module()
    if module is None or not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU and nvidia-ml-py")
    return module


def card_name(nvml) -> str:
    from sweep.measure.telemetry import nvml_text

    return nvml_text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(0)))


def hardware_option(nvml) -> str:
    """The conf/hardware option of this card, by name and memory (an A100 40 GB has none)."""
    import yaml

    from sweep.measure.telemetry import check_gpu_memory

    name = card_name(nvml)
    option = next((opt for word, opt in HARDWARE_BY_NAME.items() if word in name), None)
    if option is None:
        pytest.skip(f"no hardware option for {name}")
    memory_gb = yaml.safe_load((REPO / "conf/hardware" / f"{option}.yaml").read_text())["memory_gb"]
    try:
        check_gpu_memory(option, memory_gb)
    except BackendError:
        pytest.skip(f"no hardware option for {name} with its memory")
    return option


def busy(seconds: float) -> None:
    """Keep the GPU at work for `seconds`: fp16 matrix products, synchronised."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(20):
            a @ a  # noqa: B018  (the work is the point)
        torch.cuda.synchronize()


def test_every_cuda_visible_devices_form_names_the_same_card(nvml, monkeypatch):
    from sweep.measure.telemetry import has_energy_counter, nvml_text, visible_gpus

    uuid = nvml_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(0)))
    assert uuid.startswith("GPU-")
    for visible in (None, "0", uuid, uuid[:12]):
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        (handle, *_) = visible_gpus(nvml)
        assert nvml_text(nvml.nvmlDeviceGetUUID(handle)) == uuid, visible
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-not-a-card")
    assert visible_gpus(nvml) == []  # as CUDA: an entry naming no device hides the rest
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert has_energy_counter(nvml, visible_gpus(nvml)[0])  # Volta and later keep it


def test_the_card_and_driver_pass_the_deployment_checks(nvml):
    from sweep.measure.telemetry import check_gpu_memory, nvml_text
    from sweep.worker.cuda_driver import check_cuda_driver, driver_problem

    driver = nvml_text(nvml.nvmlSystemGetDriverVersion())
    assert driver_problem(torch.version.cuda, driver) is None
    check_cuda_driver()  # quiet: torch's CUDA runs on this driver (it just did)
    total_gb = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(0)).total / 1e9
    check_gpu_memory("this card", total_gb)
    with pytest.raises(BackendError, match="another card"):
        check_gpu_memory("a card twice as large", 2 * total_gb)
    print(
        f"\n{card_name(nvml)}: driver {driver}, torch CUDA {torch.version.cuda}, {total_gb:.1f} GB"
    )


def test_the_energy_counter_and_the_power_samples_agree_under_load(nvml, monkeypatch):
    """Both of `sweep.core.energy`'s GPU methods over the same steady second-to-fifth second."""
    from sweep.loadgen.clock import now_s
    from sweep.measure.telemetry import GPU_INTERVAL_S, Sampler, nvml_source

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    t0 = now_s()
    with Sampler([(nvml_source(nvml), GPU_INTERVAL_S)], t0) as sampler:
        busy(6.0)
    series = pd.DataFrame(sampler.rows, columns=[R.T_S, R.SOURCE, R.METRIC, R.VALUE])
    window = (1.5, 5.5)  # the load's steady part: the power reading trails a change
    counter = device_energy(series, window)["gpu0"]
    powers = device_energy(series[series[R.METRIC] != R.ENERGY_COUNTER_J], window)["gpu0"]
    assert counter[1] == R.ENERGY_NVML_COUNTER and powers[1] == R.ENERGY_POWER_INTEGRAL
    seconds = window[1] - window[0]
    print(
        f"\nunder load: counter {counter[0]:.1f} J ({counter[0] / seconds:.1f} W), "
        f"power samples {powers[0]:.1f} J ({powers[0] / seconds:.1f} W), "
        f"{(series[R.METRIC] == R.GPU_POWER_W).sum()} power samples"
    )
    assert 50 < counter[0] / seconds < 2000  # a datacentre card at work, in watts
    assert 0.8 < counter[0] / powers[0] < 1.25
    memory = series[series[R.METRIC] == R.GPU_MEMORY_USED_MB][R.VALUE]
    assert memory.max() > 128  # the 8192 x 8192 fp16 operands alone are 128 MiB


def run_hf_trials(nvml, *overrides: str) -> list:
    """The trials of one transformers deployment on CUDA, run as its Ray task runs them."""
    from sweep.worker.environment import worker_environment
    from sweep.worker.trial import DeploymentStarted, run_deployment
    from tests.helpers import deployment_of, environment_restored

    base = [
        "model=tiny_llama",
        "backend=hf",
        "backend.device=cuda",
        "backend.dtype=fp16",
        "backend.num_gpus=1",
        f"hardware={hardware_option(nvml)}",
        "dataset=random",
    ]
    deployment = deployment_of([*base, *overrides])
    with environment_restored():  # the deployment's task sets variables in its process
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # as the Ray task sets it
        runner = run_deployment(deployment, worker_environment())
        try:
            return [item for item in runner if not isinstance(item, DeploymentStarted)]
        finally:
            runner.close()


def test_an_hf_trial_on_cuda_counts_exactly_and_measures_its_energy(nvml):
    allowed = os.sched_getaffinity(0)
    trials = run_hf_trials(
        nvml,
        "sweep.name=gpu_hf",
        "workload=closed_loop",
        "workload.concurrency=1",
        f"workload.num_requests={NUM_REQUESTS}",
        f"workload.output_len={OUTPUT_LEN}",
        "dataset.input_len=32",
    )
    (files,) = trials
    summary = files.summary.to_pylist()[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    requests = files.requests.to_pandas()
    assert len(requests) == NUM_REQUESTS
    assert (requests[R.OUTPUT_TOKENS] == OUTPUT_LEN).all()  # ignore_eos on the GPU too
    assert summary["env.gpu_name"] == card_name(nvml)
    assert summary[R.ENERGY_METHOD] == R.ENERGY_NVML_COUNTER
    assert summary[R.ENERGY_J] > 0 and 20 < summary[R.MEAN_POWER_W] < 2000
    tokens = NUM_REQUESTS * OUTPUT_LEN
    assert summary[R.ENERGY_J_PER_OUTPUT_TOKEN] == pytest.approx(summary[R.ENERGY_J] / tokens)
    series = files.timeseries.to_pandas()
    gpu = series[series[R.SOURCE] == "gpu0"]
    assert gpu[gpu[R.METRIC] == R.GPU_MEMORY_USED_MB][R.VALUE].max() > 0
    # A GPU node has cores to spare: the load generator kept the highest quarter of them for
    # itself while the deployment ran (`cluster.isolate_client=auto`), and gave them back.
    assert os.sched_getaffinity(0) == allowed
    if len(allowed) >= 4:
        quarter = sorted(allowed)[-(len(allowed) // 4) :]
        assert summary[R.ENV_CLIENT_CPUS] == ",".join(map(str, quarter))
    print(
        f"\nhf fp16 on {summary['env.gpu_name']}: {summary[R.ENERGY_J]:.1f} J, "
        f"{summary[R.MEAN_POWER_W]:.1f} W mean, "
        f"{summary[R.ENERGY_J_PER_OUTPUT_TOKEN]:.3f} J per output token, "
        f"{summary[R.OUTPUT_THROUGHPUT]:.0f} output tok/s, load generator on cores "
        f"{summary[R.ENV_CLIENT_CPUS]} of {len(allowed)}"
    )


def test_a_batch_out_of_gpu_memory_fails_its_trial_and_the_next_one_runs(nvml):
    """A real `torch.OutOfMemoryError`: the card is filled but for 256 MiB, the first trial's
    batch (1024 prompts of 512 tokens) cannot fit in that, the second's (4 of 32) can."""
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(free - 256 * 2**20, dtype=torch.uint8, device="cuda")
    try:
        trials = run_hf_trials(
            nvml,
            "sweep.name=gpu_oom",
            "backend.mode=static_batch",
            "workload=offline_batch",
            "workload.discard_first_batch=false",
            "+sweep.grid={workload.batch_size: [1024, 4]}",
            "workload.num_requests=1024",
            "workload.output_len=8",
            "dataset.input_len=512",
        )
    finally:
        del hog
        torch.cuda.empty_cache()
    big, small = (files.summary.to_pylist()[0] for files in trials)
    assert big["workload.batch_size"] == 1024 and small["workload.batch_size"] == 4
    assert big[R.TRIAL_STATUS] != R.STATUS_OK
    assert big[R.ERROR_KIND] == R.ERROR_OUT_OF_MEMORY, big[R.ERROR_MESSAGE]
    assert "out of memory at batch 1024" in big[R.ERROR_MESSAGE]
    assert "\n" not in big[R.ERROR_MESSAGE]
    assert small[R.TRIAL_STATUS] == R.STATUS_OK, small[R.ERROR_MESSAGE]
    requests = trials[1].requests.to_pandas()
    assert len(requests) == 1024 and (requests[R.OUTPUT_TOKENS] == 8).all()
    print(f"\nbatch 1024 with 256 MiB free: {big[R.ERROR_MESSAGE][:160]}")
