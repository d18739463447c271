"""The proxy's pure parts (embedder, cache, clip rules, answer recording and replay), its config
checks and the plan's refusals; no process is started here (tests/backends/test_proxy.py)."""

import json

import numpy as np
import pytest

from backends.models.tiny import ensure_tiny_model
from backends.models.tokenizer import load_tokenizer
from backends.proxy.cache import Answer, SemanticCache, prompt_text
from backends.proxy.clip import Counter, Limits, clip_body
from backends.proxy.embedder import EmbedderError, HashingEmbedder, load_embedder
from backends.proxy.stream import AnswerRecorder, replay
from sweep.core import records as R
from sweep.core.config import ClipProxyConfig, PromptsDatasetConfig, SemanticCacheProxyConfig
from sweep.core.errors import ConfigError
from sweep.datasets import prompt_file
from sweep.datasets.paraphrase import reword_text
from sweep.loadgen.recorder import RequestTracker
from sweep.loadgen.sse import StreamState
from sweep.plan.plan import build_plan

pytestmark = [pytest.mark.timeout(60)]


# --- the embedder ---


def test_hashing_embedder_is_deterministic_and_unit_length():
    text = "What is the capital city of Canada?"
    a, b = HashingEmbedder().embed(text), HashingEmbedder().embed(text)
    assert a.dtype == np.float32 and a.shape == (2048,)
    assert np.array_equal(a, b)  # CRC-32, not Python's per-process salted hash
    assert float(np.linalg.norm(a)) == pytest.approx(1.0, abs=1e-6)
    assert not HashingEmbedder().embed("?!").any()  # no word: the zero vector, no NaN


def test_rewordings_score_above_the_default_threshold_and_other_prompts_below():
    """On the shipped prompt file, what the dataset's rewording makes of a prompt stays above
    the default threshold and no two different prompts reach it (the docstring's numbers)."""
    by_task = prompt_file.read_prompt_file(prompt_file.path_of(PromptsDatasetConfig()))
    texts = [text for task in by_task.values() for text in task]
    embedder, threshold = HashingEmbedder(), SemanticCacheProxyConfig().threshold
    vectors = np.stack([embedder.embed(t) for t in texts])
    similar = vectors @ vectors.T
    np.fill_diagonal(similar, 0.0)
    assert similar.max() < threshold - 0.1
    rng = np.random.default_rng(0)
    near = [
        float(embedder.embed(reword_text(t, rng)) @ v) for t in texts for v in [embedder.embed(t)]
    ]
    assert min(near) >= threshold + 0.05


def test_an_embedding_model_that_cannot_load_is_one_line():
    with pytest.raises(EmbedderError) as info:
        load_embedder("/no/such/embedding-model")
    message = str(info.value)
    assert "\n" not in message and "/no/such/embedding-model" in message
    assert "pip install -e '.[proxy]'" in message or "cannot load embedding model" in message


def test_a_sentence_transformers_model_embeds_to_unit_vectors():
    """Only where the `proxy` extra is installed (CI does not): the tiny model, mean-pooled."""
    pytest.importorskip("sentence_transformers")
    embedder = load_embedder(str(ensure_tiny_model()))
    a, b = embedder.embed("the capital of Canada"), embedder.embed("the capital of Canada?")
    assert a.shape == (embedder.dim,) and float(a @ a) == pytest.approx(1.0, abs=1e-5)
    assert float(a @ b) > 0.8


# --- the cache ---


def answer(text="a b"):
    return Answer(texts=(text,), tokens=(2,), exact=True)


def unit(*values):
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_a_lookup_hits_at_the_threshold_and_misses_below():
    cache = SemanticCache(dim=2, threshold=0.9, max_entries=10)
    assert cache.lookup(unit(1, 0)) == (None, 0.0)
    cache.store(unit(1, 0), answer("x"))
    hit, similarity = cache.lookup(unit(1, 0.3))  # cos = 0.958
    assert hit.texts == ("x",) and similarity == pytest.approx(0.958, abs=1e-3)
    miss, similarity = cache.lookup(unit(1, 0.6))  # cos = 0.857
    assert miss is None and similarity < 0.9


def test_threshold_one_takes_the_same_prompt_only():
    embedder = HashingEmbedder()
    cache = SemanticCache(embedder.dim, threshold=1.0, max_entries=10)
    cache.store(embedder.embed("How many bones are in the adult human body?"), answer())
    assert cache.lookup(embedder.embed("How many bones are in the adult human body?"))[0]
    assert (
        cache.lookup(embedder.embed("How many bones are in the adult human body? Thanks!"))[0]
        is None
    )


def test_the_oldest_entry_goes_first_and_clear_empties():
    cache = SemanticCache(dim=3, threshold=0.99, max_entries=2)
    for i, axis in enumerate([(1, 0, 0), (0, 1, 0), (0, 0, 1)]):
        cache.store(unit(*axis), answer(str(i)))
    assert len(cache) == 2
    assert cache.lookup(unit(1, 0, 0))[0] is None  # overwritten by the third
    assert cache.lookup(unit(0, 0, 1))[0].texts == ("2",)
    cache.clear()
    assert len(cache) == 0 and cache.lookup(unit(0, 1, 0))[0] is None


def test_the_text_a_request_is_cached_under():
    words = Counter()
    assert prompt_text({"prompt": "hi there"}, "completions", words) == "hi there"
    assert prompt_text({"prompt": [5, 6]}, "completions", words) == "5 6"
    chat = {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]
    }
    assert prompt_text(chat, "chat", words) == "be brief\nq"
    assert prompt_text({"prompt": ["a", "b"]}, "completions", words) is None


# --- the clip rules ---


def test_words_are_counted_without_a_tokenizer_and_either_end_is_cut():
    body = {"prompt": "one two three four five six", "max_tokens": 50}
    right = clip_body(body, "completions", Limits(4, 10, "right"), Counter())
    assert right.body == {"prompt": "one two three four", "max_tokens": 10}
    assert right.input_clipped and right.output_clipped
    left = clip_body(body, "completions", Limits(4, None, "left"), Counter())
    assert left.body["prompt"] == "three four five six" and left.body["max_tokens"] == 50
    assert body["prompt"] == "one two three four five six"  # the original is not touched
    within = clip_body(body, "completions", Limits(6, 50), Counter())
    assert not within.input_clipped and not within.output_clipped


def test_token_ids_and_both_output_fields_are_capped_and_a_missing_cap_is_set():
    clipped = clip_body({"prompt": [1, 2, 3, 4, 5]}, "completions", Limits(3, 8), Counter())
    assert clipped.body == {"prompt": [1, 2, 3], "max_tokens": 8}
    body = {"messages": [], "max_tokens": 20, "max_completion_tokens": 4}
    assert clip_body(body, "chat", Limits(None, 8), Counter()).body == {
        "messages": [], "max_tokens": 8, "max_completion_tokens": 4
    }  # fmt: skip


def test_a_conversation_is_cut_from_the_side_it_drops():
    messages = [{"role": "user", "content": "a b c"}, {"role": "user", "content": "d e f"}]
    right = clip_body({"messages": messages}, "chat", Limits(4, side="right"), Counter())
    assert [m["content"] for m in right.body["messages"]] == ["a b c", "d"]
    left = clip_body({"messages": messages}, "chat", Limits(4, side="left"), Counter())
    assert [m["content"] for m in left.body["messages"]] == ["c", "d e f"]


def test_a_text_prompt_is_cut_to_the_limit_as_the_server_counts_it():
    """With the model's tokenizer the limit counts special tokens (BOS) as a server does."""
    tokenizer = load_tokenizer(str(ensure_tiny_model()))  # the shared copy: made once
    text = "The old farmer carried a heavy wooden box across the muddy field " * 4
    assert len(tokenizer(text).input_ids) > 20
    for side in ("right", "left"):
        cut = clip_body({"prompt": text}, "completions", Limits(20, side=side), Counter(tokenizer))
        prompt = cut.body["prompt"]
        assert 16 <= len(tokenizer(prompt).input_ids) <= 20
        assert (
            text.startswith(prompt) if side == "right" else text.rstrip().endswith(prompt.strip())
        )


# --- recording and replaying an answer ---


def sse(*events):
    return (
        b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    )


def vllm_like_stream():
    """Two text chunks with running counts (one of two tokens), then the usage-only chunk."""
    return sse(
        {"choices": [{"text": " a", "finish_reason": None}], "usage": {"completion_tokens": 1}},
        {
            "choices": [{"text": " b c", "finish_reason": "length"}],
            "usage": {"completion_tokens": 3},
        },
        {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}},
    )


def test_the_recorder_keeps_chunks_tokens_and_usage_across_split_reads():
    recorder = AnswerRecorder("completions")
    data = vllm_like_stream()
    for i in range(0, len(data), 7):  # network reads cut lines anywhere
        recorder.feed(data[i : i + 7])
    recorded = recorder.answer()
    assert recorded == Answer((" a", " b c"), (1, 2), True, "length", 7, 3)
    unfinished = AnswerRecorder("completions")
    unfinished.feed(data[:40])
    assert unfinished.answer() is None  # never cached


def replayed(recorded, body, api="completions", rate=None):
    tracker = RequestTracker(0, None, 0, body.get("max_tokens", 0))
    state = StreamState(api, tracker)
    events = list(replay(recorded, body, api, "rid", rate))
    for _, data in events:
        state.feed(data)
    return events, state, tracker


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_a_replay_reads_as_the_server_stream_did(api):
    recorded = Answer((" a", " b c"), (1, 2), True, "length", 7, 3)
    body = {"model": "m", "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    events, state, tracker = replayed(recorded, body, api, rate=100.0)
    assert state.done and state.server_tokens == 3 and tracker.server_input_tokens == 7
    assert tracker.chunk_usage == [1, 3] and tracker.chunk_texts == ["", ""]
    assert [due for due, _ in events] == pytest.approx([0.0, 0.02, 0.02, 0.02])  # 2 tokens later


def test_a_replay_stops_at_the_requests_own_cap():
    recorded = Answer((" a", " b", " c"), (1, 1, 1), True, "stop", 7, 3)
    body = {"max_tokens": 2, "stream_options": {"include_usage": True}}
    _, state, tracker = replayed(recorded, body)
    assert state.server_tokens == 2 and tracker.chunk_texts == [" a", " b"]
    assert state.finished  # the last chunk replayed carries a finish reason


# --- config and plan ---


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"threshold": 0.0}, "proxy.threshold must be in (0, 1], got 0.0"),
        ({"threshold": 1.5}, "proxy.threshold must be in (0, 1], got 1.5"),
        ({"max_input_tokens": 0}, "proxy.max_input_tokens must be > 0, got 0"),
        ({"max_output_tokens": -4}, "proxy.max_output_tokens must be > 0, got -4"),
        ({"hit_tokens_per_s": 0}, "proxy.hit_tokens_per_s must be > 0"),
        ({"truncation_side": "middle"}, "proxy.truncation_side='middle' is not valid"),
    ],
)
def test_bad_settings_are_one_config_error(values, expected):
    with pytest.raises(ConfigError) as info:
        SemanticCacheProxyConfig(**values)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_clip_without_any_limit_is_refused():
    with pytest.raises(ConfigError, match="proxy=clip needs proxy.max_input_tokens or"):
        ClipProxyConfig()
    assert SemanticCacheProxyConfig().max_input_tokens is None  # a cache need not clip


def test_a_bad_threshold_on_the_command_line_is_one_line():
    with pytest.raises(ConfigError) as info:
        build_plan(["backend=sim", "proxy=semantic_cache", "proxy.threshold=1.5"])
    assert str(info.value) == "proxy.threshold must be in (0, 1], got 1.5"


@pytest.mark.parametrize(("backend", "what"), [("hf", "an in-process engine"), ("tgi", "TGI")])
def test_a_proxy_in_front_of_an_engine_or_tgi_is_refused_at_plan_time(backend, what):
    with pytest.raises(ConfigError) as info:
        build_plan([f"backend={backend}", "proxy=clip"])
    message = str(info.value)
    assert f"backend={backend} is {what}" in message and "use proxy=none" in message


def test_a_proxy_is_a_trials_setting_its_deployment_and_the_other_ids_stay():
    plan = build_plan(["backend=sim", "+sweep.grid.proxy=[none,clip,semantic_cache]"])
    (deployment,) = plan.deployments  # one server for all three
    ids = {t.config.proxy.name: t.trial_id for t in deployment.trials}
    assert len(set(ids.values())) == 3
    (alone,) = build_plan(["backend=sim"]).trials  # proxy=none, as before the group existed
    assert alone.trial_id == ids["none"] and alone.flat["proxy.name"] == "none"
    assert R.CACHE_HIT in R.REQUESTS_SCHEMA.names
