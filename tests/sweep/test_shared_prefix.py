"""The shared_prefix dataset, the prompts dataset's no-repeat rule, chat-template lengths, and the
reusable-prefix and repeat columns (issue 14), on real tokenizers and the sim server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

from analysis.report.server_view import server_sections
from backends.config import EngineConfig
from backends.hf import HFBackend, HFBackendConfig
from backends.models.tiny import ensure_tiny_model
from sweep.core import records as R
from sweep.core.config import (
    PromptsDatasetConfig,
    RandomDatasetConfig,
    SharedPrefixDatasetConfig,
)
from sweep.core.errors import ConfigError, DatasetError
from sweep.datasets import load_prompts
from sweep.datasets.chat import ChatTokenizer
from sweep.datasets.markers import content_start
from sweep.datasets.reuse import (
    common_prefix,
    prompt_columns,
    repeated_fraction,
    reusable_prefix_fraction,
)
from sweep.datasets.shared_prefix import group_sizes, interleaved_groups
from sweep.plan.plan import build_plan
from tests.helpers import run_sweep_here
from tests.sweep.test_datasets import sentencepiece_style_bpe

PREFIX, SUFFIX = 48, 12


@pytest.fixture(scope="module")
def tiny():
    return AutoTokenizer.from_pretrained(str(ensure_tiny_model()))


@pytest.fixture(scope="module", params=["tiny_model", "sentencepiece_style", "tiny_chat"])
def view(request, tiny):
    """(tokenizer given to load_prompts, chat, the ids an engine sees for a text)."""
    if request.param == "sentencepiece_style":
        tok = sentencepiece_style_bpe()
        return tok, False, lambda text: tok(text).input_ids
    if request.param == "tiny_chat":
        return tiny, True, lambda text: ChatTokenizer(tiny)(text).input_ids
    return tiny, False, lambda text: tiny(text).input_ids


def shared(num_groups=4, **values):
    values = {"prefix_len": PREFIX, "suffix_len": SUFFIX, **values}
    return SharedPrefixDatasetConfig(num_groups=num_groups, **values)


def groups_of(prompts):
    """Each prompt's group, numbered by first appearance, read from its first PREFIX ids."""
    seen: dict[tuple, int] = {}
    return [seen.setdefault(p.token_ids[:PREFIX], len(seen)) for p in prompts]


# shared_prefix -------------------------------------------------------------------------------


def test_lengths_are_exact_and_groups_share_exactly_their_prefix(view):
    tokenizer, chat, engine_ids = view
    prompts = load_prompts(shared(seed=3), tokenizer, 30, chat=chat)
    for p in prompts:  # re-tokenized as the engine will: the ids and the length hold
        assert p.token_ids == tuple(engine_ids(p.text)) and p.input_tokens == PREFIX + SUFFIX
    groups = groups_of(prompts)
    assert len(set(groups)) == 4
    start = content_start(ChatTokenizer(tokenizer) if chat else tokenizer)
    for i, a in enumerate(prompts):
        for j, b in enumerate(prompts[:i]):
            lcp = common_prefix(a.token_ids, b.token_ids)
            if groups[i] == groups[j]:
                assert PREFIX <= lcp < PREFIX + SUFFIX  # the prefix, and distinct suffixes
            else:
                assert lcp < start + 3  # random prefixes: at most a chance token or two
    assert load_prompts(shared(seed=3), tokenizer, 30, chat=chat) == prompts  # seeded
    assert load_prompts(shared(seed=4), tokenizer, 30, chat=chat) != prompts


def test_groups_interleave_and_zipf_skews_their_sizes(tiny):
    assert group_sizes(shared(), 10) == [3, 3, 2, 2]  # uniform, the workload's count
    assert group_sizes(shared(prompts_per_group=5), 20) == [5, 5, 5, 5]
    zipf = {"group_distribution": "zipf", "zipf_exponent": 1.0}
    # 100 x (1, 1/2, 1/3, 1/4) / (25/12) = 48, 24, 16, 12
    assert group_sizes(shared(**zipf), 100) == [48, 24, 16, 12]
    # 20 x the same: 9.6, 4.8, 3.2, 2.4 -> floors 9, 4, 3, 2 and the two largest remainders
    assert group_sizes(shared(prompts_per_group=5, **zipf), 20) == [10, 5, 3, 2]
    steep = group_sizes(shared(num_groups=8, group_distribution="zipf", zipf_exponent=2.0), 200)
    assert steep == sorted(steep, reverse=True) and steep[0] > 0.6 * 200
    order = interleaved_groups([10, 10, 10, 10], 40, np.random.default_rng(0))
    runs = 1 + sum(a != b for a, b in zip(order, order[1:], strict=False))
    assert runs >= 20  # shuffled together: grouped blocks would give 4 runs
    for group in range(4):
        where = [i for i, g in enumerate(order) if g == group]
        assert where[-1] - where[0] > 20  # every group spread over the trial
    prompts = load_prompts(shared(**zipf), tiny, 100)
    counts = pd.Series(groups_of(prompts)).value_counts().sort_values(ascending=False)
    assert counts.tolist() == [48, 24, 16, 12]


def test_reusable_share_of_shared_prefix_and_random_prompts(tiny):
    prompts = load_prompts(shared(num_groups=4, prefix_len=90, suffix_len=10), tiny, 40)
    share = prompt_columns(prompts)[R.PROMPT_REUSABLE_PREFIX_PERCENT]
    # 36 of 40 prompts reuse their group's 90 of 100 tokens; the 4 firsts only the BOS
    assert 81.0 <= share < 82.0
    assert prompt_columns(prompts)[R.PROMPT_REPEAT_PERCENT] == 0.0
    randoms = load_prompts(RandomDatasetConfig(input_len=100), tiny, 40)
    assert prompt_columns(randoms)[R.PROMPT_REUSABLE_PREFIX_PERCENT] < 3.0


def test_reusable_share_is_exact_on_a_hand_built_case():
    sequences = [(1, 2, 3, 4), (1, 2, 3, 5), (1, 2, 9), (7,), (1, 2, 3, 4), (5, 6), (1, 2, 3, 4, 8)]
    # shared with the best earlier one: 0, 3, 2, 0, 4 (a repeat), 0, 4
    assert reusable_prefix_fraction(sequences) == pytest.approx(13 / 23)
    # the best match is not the latest: the third shares 2 with the first
    assert reusable_prefix_fraction([(5, 6, 7), (1, 2), (5, 6, 8)]) == pytest.approx(2 / 8)
    assert reusable_prefix_fraction([]) is None
    assert repeated_fraction(["a", "b", "a", "a"]) == 0.5 and repeated_fraction([]) is None
    no_ids = load_prompts(RandomDatasetConfig(input_len=20), None, 3)  # the server counts
    assert prompt_columns(no_ids)[R.PROMPT_REUSABLE_PREFIX_PERCENT] is None


def test_without_a_tokenizer_prompts_are_corpus_text_sharing_a_prefix():
    prompts = load_prompts(shared(num_groups=2, prefix_len=40, suffix_len=8), None, 6)
    heads = [p.text.split("\n")[0] for p in prompts]
    assert len(set(heads)) == 2 and all(len(h.split()) == 30 for h in heads)  # 0.75 word/token
    assert len({p.text for p in prompts}) == 6 and all(p.token_ids == () for p in prompts)


# prompts: no repeats unless asked ------------------------------------------------------------


def test_prompts_never_repeat_unless_asked(tiny):
    qa = PromptsDatasetConfig(task="qa")  # 32 prompts in the packaged file
    prompts = load_prompts(qa, tiny, 100)
    texts = [p.text for p in prompts]
    assert len(set(texts)) == 100 and prompt_columns(prompts)[R.PROMPT_REPEAT_PERCENT] == 0.0
    assert prompts[:32] == load_prompts(qa, tiny, 32)  # the file's own, as before
    start = content_start(tiny)
    for i in range(32, 100):  # each extra starts with a first token no other prompt has
        assert texts[i].endswith(texts[(i - 32) % 32]) and texts[i].count("\n") == 1
        firsts = [p.token_ids[start] for j, p in enumerate(prompts) if j != i]
        assert prompts[i].token_ids[start] not in firsts
        assert prompts[i].token_ids == tuple(tiny(texts[i]).input_ids)
    cycled = load_prompts(PromptsDatasetConfig(task="qa", allow_repeats=True), tiny, 100)
    assert [p.text for p in cycled] == [texts[i % 32] for i in range(100)]  # today's cycling
    assert prompt_columns(cycled)[R.PROMPT_REPEAT_PERCENT] == pytest.approx(68.0)


def test_the_new_keys_at_their_defaults_move_no_id():
    def ids(*overrides):
        (deployment,) = build_plan(["dataset=prompts", *overrides]).deployments
        return deployment.deployment_id, deployment.trials[0].trial_id

    before = ids()  # backend hf: an engine, whose chat switch is backend.api
    assert ids("dataset.allow_repeats=false", "backend.api=null") == before
    assert ids("dataset.allow_repeats=true")[1] != before[1]
    chat = ids("backend.api=chat")
    assert chat[0] != before[0] and chat[1] != before[1]


# chat: one switch, lengths with the template -------------------------------------------------


def test_chat_lengths_count_the_template_for_every_dataset(tiny):
    chat = ChatTokenizer(tiny)
    for cfg in (RandomDatasetConfig(input_len=40), PromptsDatasetConfig(task="qa")):
        for p in load_prompts(cfg, tiny, 5, chat=True):
            rendered = tiny.apply_chat_template(
                [{"role": "user", "content": p.text}], add_generation_prompt=True, tokenize=False
            )
            assert rendered.startswith("user: ") and rendered.endswith("\nassistant: ")
            assert p.token_ids == tuple(tiny(rendered, add_special_tokens=False).input_ids)
            if cfg.name == "random":
                assert p.input_tokens == 40
    plain = load_prompts(PromptsDatasetConfig(task="qa"), tiny, 1)[0]
    templated = load_prompts(PromptsDatasetConfig(task="qa"), tiny, 1, chat=True)[0]
    assert templated.input_tokens == len(chat(plain.text).input_ids) > plain.input_tokens


def test_engines_take_chat_from_backend_api(model_dir_tiny):
    assert HFBackend(HFBackendConfig(), model_dir_tiny).api == "completions"
    assert HFBackend(HFBackendConfig(api="chat"), model_dir_tiny).api == "chat"
    with pytest.raises(ConfigError, match=r"backend\.api='tgi' is not valid"):
        EngineConfig(name="hf", api="tgi")


def test_an_engine_asked_for_chat_is_given_the_templated_prompts(tiny, tmp_path):
    """backend.api=chat on the hf engine, through the trial runner: its inputs are templated."""
    files = []
    overrides = ["sweep.name=chat", "backend=hf", "backend.api=chat", "dataset=prompts"]
    workload = ["workload.num_requests=3", "workload.output_len=2", "workload.warmup_requests=0"]
    run_sweep_here(tmp_path, [*overrides, "dataset.task=qa", *workload], files)
    (trial,) = files
    assert trial.summary.to_pylist()[0][R.TRIAL_STATUS] == R.STATUS_OK
    texts = [p.text for p in load_prompts(PromptsDatasetConfig(task="qa"), tiny, 3)]
    templated = [len(ChatTokenizer(tiny)(t).input_ids) for t in texts]
    assert trial.requests.column(R.INPUT_TOKENS).to_pylist() == templated
    assert all(n > len(tiny(t).input_ids) for n, t in zip(templated, texts, strict=True))


@pytest.fixture(scope="module")
def model_dir_tiny():
    return str(ensure_tiny_model())


# bad input: one line, before any request ----------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num_groups": 0}, "dataset.num_groups must be > 0, got 0"),
        ({"suffix_len": 0}, "dataset.suffix_len must be > 0, got 0"),
        ({"group_distribution": "pareto"}, "dataset.group_distribution='pareto' is not valid"),
        ({"zipf_exponent": -1.0}, "dataset.zipf_exponent must be > 0"),
    ],
)
def test_bad_config_is_one_line(values, message):
    with pytest.raises(ConfigError) as info:
        shared(**values)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_lengths_are_one_line(tiny):
    cases = [
        (shared(prefix_len=5000), "exceed the model's context of 4096 tokens"),
        (shared(prefix_len=1), "dataset.prefix_len=1 is below the minimum 3"),
        (shared(prompts_per_group=2), "= 8 prompts, but the workload sends 9"),
    ]
    for cfg, message in cases:
        with pytest.raises(DatasetError) as info:
            load_prompts(cfg, tiny, 9)
        assert message in str(info.value) and "\n" not in str(info.value)
    no_template = AutoTokenizer.from_pretrained(str(ensure_tiny_model()))
    no_template.chat_template = None
    with pytest.raises(DatasetError, match="has no chat template"):
        load_prompts(shared(), no_template, 2, chat=True)


def test_a_trial_records_the_columns_and_a_too_long_prefix_sends_nothing(tmp_path):
    """Through the trial runner against the sim: good trials carry both columns; a prefix past
    the model's context fails its trial with one line, and the server saw no request."""
    files = []
    common = [
        "backend=sim",
        "workload=closed_loop",
        "workload.concurrency=2",
        "workload.num_requests=12",
        "workload.output_len=4",
        "backend.ttft_ms=1",
        "backend.itl_ms=1",
    ]
    overrides = [*common, "sweep.name=sp", "dataset=shared_prefix", "dataset.suffix_len=8"]
    run_sweep_here(tmp_path, [*overrides, "+sweep.grid.dataset.prefix_len=[32,5000]"], files)
    ok, bad = (f.summary.to_pylist()[0] for f in files)
    assert ok[R.TRIAL_STATUS] == R.STATUS_OK and ok[R.NUM_REQUESTS] == 12
    # 13 prompts (1 warm-up) in 8 groups: at least 5 reuse 32 of their 40 tokens
    assert ok[R.PROMPT_REUSABLE_PREFIX_PERCENT] >= 100 * (5 * 32) / (13 * 40)
    assert ok[R.PROMPT_REPEAT_PERCENT] == 0.0
    assert bad[R.TRIAL_STATUS] == R.STATUS_FAILED and bad[R.ERROR_KIND] == R.ERROR_DATASET
    assert "exceed the model's context of 4096 tokens" in bad[R.ERROR_MESSAGE]
    assert "\n" not in bad[R.ERROR_MESSAGE]
    assert bad[R.SERVER_REQUESTS] in (None, 0) and files[1].requests.num_rows == 0
    assert bad[R.PROMPT_REUSABLE_PREFIX_PERCENT] is None


def test_the_report_shows_the_offered_share_beside_the_hits():
    row = {
        R.LABEL: "v",
        R.TRIAL_ID: "v",
        R.BACKEND_NAME: "vllm_server",
        R.WORKLOAD_NAME: "closed_loop",
        R.WORKLOAD_CONCURRENCY: 4,
        R.TRIAL_STATUS: R.STATUS_OK,
        R.COMPLETED_REQUESTS: 10,
        R.SERVER_PREFIX_CACHE_HIT_PERCENT: 71.5,
        R.PROMPT_REUSABLE_PREFIX_PERCENT: 80.25,
        R.PROMPT_REPEAT_PERCENT: 0.0,
        R.SERVER_PREEMPTIONS: 0,
    }
    (counters,) = server_sections(pd.DataFrame([row]))
    columns = list(counters.table.columns)
    hits = columns.index("Prefix-cache hits (%)")
    assert columns[hits + 1 : hits + 3] == ["Reusable prefix, ideal (%)", "Repeated prompts (%)"]
    cells = counters.table.iloc[0]
    assert cells["Prefix-cache hits (%)"] == "71.5"
    assert cells["Reusable prefix, ideal (%)"] == "80.2"
    assert "perfect prefix cache" in counters.text
