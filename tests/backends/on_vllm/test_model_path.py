"""`model.path` on top of the default model, against vLLM's CPU server serving that model.

Issue 66's reproduction: a served model whose tokenizer is not the tiny model's. With the path
set only as `model.path=DIR` (the default's generator left as it is), the launched server loads
DIR, the attached endpoint's client tokenizes with DIR's tokenizer, and vLLM's own
`usage.prompt_tokens` equals the client's count on every request. The other way round (the
client on the tiny tokenizer, the server on DIR's) is what a user got before: the prompts are
then named as counted differently.
"""

import pandas as pd
import pytest

from backends.models.architecture import tokenizer_summary
from backends.vllm_server import VLLMServerBackend
from sweep.core import records as R
from tests.helpers import deployment_of, run_sweep_here, serve
from tests.other_model import build_other_model

INPUT_LEN = 128
REQUESTS = 8
WORKLOAD = [
    "dataset=random",
    f"dataset.input_len={INPUT_LEN}",
    f"workload.num_requests={REQUESTS}",
    "workload.output_len=8",
    "workload.warmup_requests=0",
]


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    return str(build_other_model(tmp_path_factory.mktemp("models") / "my-llama"))


@pytest.fixture(scope="module")
def launched(other):
    """vLLM's server launched by the trial runner on `model.path=<other>`, over the default."""
    overrides = [
        "backend=vllm_server",
        "backend.num_gpus=0",
        "hardware=cpu",
        "workload=closed_loop",
        "workload.concurrency=4",
        f"model.path={other}",
        *WORKLOAD,
    ]
    deployment = deployment_of(overrides)
    assert deployment.config.model.generator is None
    with serve(deployment, VLLMServerBackend, "vLLM server on another model") as shared:
        yield shared


def _counts(requests: pd.DataFrame) -> list[tuple[int, int]]:
    return list(zip(requests[R.INPUT_TOKENS], requests[R.SERVER_INPUT_TOKENS], strict=True))


def test_the_launched_server_loads_the_path_and_counts_the_prompts_as_the_client(launched, other):
    (files,) = launched.trials
    row = files.summary.to_pylist()[0]
    assert row[R.TRIAL_STATUS] == R.STATUS_OK, row.get(R.ERROR_MESSAGE)
    assert (row[R.MODEL_RESOLVED_PATH], row[R.MODEL_NAME]) == (other, "my-llama")
    assert row[R.MODEL_TOKENIZER] == tokenizer_summary(other)
    assert _counts(files.requests.to_pandas()) == [(INPUT_LEN, INPUT_LEN)] * REQUESTS
    assert row[R.INPUT_MISMATCH_REQUESTS] == 0 and row[R.INPUT_UNVERIFIED_REQUESTS] == 0


def test_an_attached_endpoint_tokenizes_with_the_path_given(launched, other, tmp_path):
    url = f"backend.url={launched.backend.base_url}"
    attached = ["backend=openai", url, "backend.extensions=true", *WORKLOAD]
    right, wrong = [], []
    run_sweep_here(tmp_path / "right", [*attached, f"model.path={other}"], right)
    run_sweep_here(tmp_path / "wrong", attached, wrong)  # the client on the tiny tokenizer
    row = right[0].summary.to_pylist()[0]
    assert row[R.TRIAL_STATUS] == R.STATUS_OK, row.get(R.ERROR_MESSAGE)
    assert row[R.MODEL_RESOLVED_PATH] == other
    assert _counts(right[0].requests.to_pandas()) == [(INPUT_LEN, INPUT_LEN)] * REQUESTS
    assert row[R.INPUT_MISMATCH_REQUESTS] == 0
    miscounted = wrong[0].summary.to_pylist()[0]
    counts = _counts(wrong[0].requests.to_pandas())
    assert all(client == INPUT_LEN and server != INPUT_LEN for client, server in counts), counts
    assert miscounted[R.INPUT_MISMATCH_REQUESTS] == REQUESTS
    mean = sum(server - client for client, server in counts) / REQUESTS
    assert miscounted[R.INPUT_MISMATCH_TOKENS_MEAN] == pytest.approx(mean)
