"""Image requests: the dataset's images, the bad-input lines, and the sim's own count per request.

The sim stamps how many `image_url` parts each request carried and charges `ms_per_image` before
its first token and `tokens_per_image` prompt tokens (`backends.sim_server`): the server's truth,
compared with what the dataset made and the client recorded.
"""

import base64
import io
import json

import pandas as pd
import pytest
from PIL import Image

from backends.models.tiny import ensure_tiny_model
from backends.models.tokenizer import load_tokenizer
from sweep.core import records as R
from sweep.core.config import ImagesDatasetConfig
from sweep.core.errors import ConfigError
from sweep.datasets import load_prompts
from sweep.loadgen.recorder import RequestTracker
from sweep.loadgen.sse import StreamState
from sweep.plan.plan import build_plan
from tests.helpers import run_sweep_here

SIM = [
    "backend=sim",
    "sweep.name=images_sim",
    "backend.api=chat",
    "dataset=images",
    "workload=closed_loop",
    "workload.concurrency=4",
    "workload.num_requests=24",
    "workload.warmup_requests=0",
    "workload.output_len=4",
    "backend.ttft_ms=2",
    "backend.itl_ms=1",
    "backend.tokens_per_image=100",
]


def decoded(uri):
    head, _, data = uri.partition(",")
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_prompts_carry_distinct_images_of_the_configured_sizes_and_counts():
    tokenizer = load_tokenizer(str(ensure_tiny_model()))
    cfg = ImagesDatasetConfig(
        input_len=20, images_per_request=3, min_images_per_request=0, image_sizes=[[32, 16], [8, 8]]
    )
    prompts = load_prompts(cfg, tokenizer, 40, chat=True)
    counts = [len(p.images) for p in prompts]
    assert set(counts) == {0, 1, 2, 3}  # drawn in [0, 3]
    assert all(p.input_tokens == 20 for p in prompts)  # the text's tokens, chat template included
    sizes = [decoded(uri).size for p in prompts for uri in p.images]
    assert sizes == [(32, 16), (8, 8)] * (len(sizes) // 2) + [(32, 16)] * (len(sizes) % 2)
    uris = [uri for p in prompts for uri in p.images]
    assert len(set(uris)) == len(uris)  # no image twice: a server's image cache never answers
    assert [p.images for p in load_prompts(cfg, tokenizer, 40, chat=True)] == [
        p.images for p in prompts
    ]  # the seed decides


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("dataset.image_sizes=[[0,64]]", "dataset.image_sizes[0]=[0, 64] must be [width, height]"),
        ("dataset.images_per_request=-1", "dataset.images_per_request must be >= 0"),
        ("dataset.image_format=gif", "dataset.image_format"),
    ],
)
def test_bad_image_settings_are_one_line_when_composed(override, says):
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("]", r"\]")) as info:
        build_plan([*SIM, override])
    assert "\n" not in str(info.value)


@pytest.fixture
def stamps_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SIM_STAMPS_DIR", str(tmp_path))
    return tmp_path


def server_stamps(folder):
    (path,) = folder.glob("sim-stamps-*.json")
    return json.loads(path.read_text())


def test_exact_image_counts_reach_the_server_and_cost_their_time(stamps_dir, tmp_path):
    overrides = [
        *SIM,
        "dataset.images_per_request=4",
        "dataset.min_images_per_request=0",
        "backend.ms_per_image=20",
    ]
    out = run_sweep_here(tmp_path / "out", overrides)
    (trial,) = out.glob("*/*/")
    requests = pd.read_parquet(trial / R.REQUESTS_FILE).sort_values(R.REQUEST_IDX)
    assert (requests[R.STATUS] == R.STATUS_OK).all()
    # every request's images, as the dataset made them, counted by the server
    tokenizer = load_tokenizer(str(ensure_tiny_model()))
    made = load_prompts(
        ImagesDatasetConfig(images_per_request=4, min_images_per_request=0),
        tokenizer,
        24,
        chat=True,
    )
    assert requests[R.IMAGES].tolist() == [len(p.images) for p in made]
    stamps = server_stamps(stamps_dir)
    assert len(stamps) == 24
    assert sorted(s["images"] for s in stamps.values()) == sorted(requests[R.IMAGES])
    # the server's prompt tokens (the sim's: the templated text's, as the client counts them)
    # add each image's 100 tokens
    extra = requests[R.SERVER_INPUT_TOKENS] - requests[R.INPUT_TOKENS]
    assert extra.tolist() == (100 * requests[R.IMAGES]).tolist()
    # side by side: four images' encoder time shows in TTFT against none
    ttft = requests.groupby(R.IMAGES)[R.TTFT_S].median()
    assert ttft[4] - ttft[0] > 0.5 * 4 * 0.020


def test_images_to_a_completions_server_are_refused_before_any_request(stamps_dir, tmp_path):
    out = run_sweep_here(tmp_path / "out", [*SIM, "backend.api=completions"])
    (trial,) = out.glob("*/*/")
    summary = pd.read_parquet(trial / R.SUMMARY_FILE).iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_FAILED
    assert summary[R.ERROR_MESSAGE] == (
        "the dataset's prompts carry images, sent only as chat messages to a server: set "
        "backend.api=chat on a server backend"
    )
    assert server_stamps(stamps_dir) == {}


# The last two events of a vLLM chat stream for a vision-language model (shape as vLLM 0.32's
# OpenAI server sends them with `stream_options.include_usage`): the usage's prompt tokens
# include the image's placeholder tokens, which the client never tokenized.
RECORDED = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"vlm",'
    b'"choices":[{"index":0,"delta":{"content":" sky"},"logprobs":null,"finish_reason":"length"}],'
    b'"usage":{"prompt_tokens":1043,"total_tokens":1047,"completion_tokens":4}}\n\n'
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"vlm",'
    b'"choices":[],"usage":{"prompt_tokens":1043,"total_tokens":1047,"completion_tokens":4}}\n\n'
    b"data: [DONE]\n\n"
)


def test_the_servers_prompt_tokens_of_an_image_request_are_recorded():
    tracker = RequestTracker(0, None, 19, 4)
    tracker.mark_sent(0.0, 0.0)
    stream = StreamState("chat", tracker)
    assert stream.feed(RECORDED, 0.1)
    row = tracker.record("t", 0.0)
    assert (row[R.INPUT_TOKENS], row[R.SERVER_INPUT_TOKENS]) == (19, 1043)
