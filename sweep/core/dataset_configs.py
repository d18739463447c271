"""The `dataset` group's config dataclasses: what prompts a trial sends.

One class per option of `conf/dataset/`, each with its types, defaults and checks
(`__post_init__`); the generators that read them are in `sweep.datasets`. Re-exported by
`sweep.core.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sweep.core.errors import check_choice, check_positive, raise_config
from sweep.core.missing import MISSING


@dataclass
class DatasetConfig:
    """Fields every dataset shares."""

    name: str = MISSING
    seed: int = 0


@dataclass
class RandomDatasetConfig(DatasetConfig):
    """Random token prompts with exact input lengths (checked after re-tokenization)."""

    name: str = "random"
    input_len: int = 128
    range_ratio: float = 0.0
    # Share of prompts that are near-duplicates of an earlier one (`sweep.datasets.paraphrase`).
    paraphrase_rate: float = 0.0

    def __post_init__(self) -> None:
        check_positive("dataset", input_len=self.input_len)
        if not 0.0 <= self.range_ratio < 1.0:
            raise_config(f"dataset.range_ratio must be in [0, 1), got {self.range_ratio}")
        check_paraphrase_rate(self.paraphrase_rate)


@dataclass
class PromptsDatasetConfig(DatasetConfig):
    """The task-tagged prompt file kept in the repo (qa, reasoning, summarization, sentiment)."""

    name: str = "prompts"
    path: str | None = None
    task: str | None = None
    # False: a trial never sends one prompt twice; past the file's end each prompt gets a
    # distinct leading line. True: the file's prompts are cycled as they are.
    allow_repeats: bool = False
    # Share of prompts that are near-duplicates of an earlier one (`sweep.datasets.paraphrase`).
    paraphrase_rate: float = 0.0

    def __post_init__(self) -> None:
        check_paraphrase_rate(self.paraphrase_rate)


def check_paraphrase_rate(rate: float) -> None:
    """`dataset.paraphrase_rate` is in [0, 1): the first prompt is never a near-duplicate."""
    if not 0.0 <= rate < 1.0:
        raise_config(f"dataset.paraphrase_rate must be in [0, 1), got {rate}")


@dataclass
class HFDatasetConfig(DatasetConfig):
    """A Hugging Face dataset split and text column (hub id, local directory or data files)."""

    name: str = "hf"
    path: str = MISSING
    subset: str | None = None
    split: str = "validation"
    column: str = "text"
    data_files: str | None = None
    max_rows: int | None = None

    def __post_init__(self) -> None:
        check_positive("dataset", max_rows=self.max_rows)


IMAGE_FORMATS = ("png", "jpeg")


@dataclass
class ImagesDatasetConfig(DatasetConfig):
    """Chat requests with images: random-token text and `image_url` data URIs the project makes.

    Each prompt's text is `input_len` tokens exactly, as `random` makes them (chat template
    included); its user message carries `images_per_request` images (or a count drawn from
    [`min_images_per_request`, `images_per_request`] with `seed`), each of width x height from
    `image_sizes` in turn, every image distinct (seeded noise), encoded as `image_format`
    (`sweep.datasets.images`). Their tokens are the server's to count (`usage.prompt_tokens`).
    """

    name: str = "images"
    input_len: int = 64
    images_per_request: int = 1
    min_images_per_request: int | None = None
    image_sizes: list[list[int]] = field(default_factory=lambda: [[64, 64]])
    image_format: str = "png"

    def __post_init__(self) -> None:
        check_positive("dataset", input_len=self.input_len)
        if self.images_per_request < 0:
            raise_config(f"dataset.images_per_request must be >= 0, got {self.images_per_request}")
        low = self.min_images_per_request
        if low is not None and not 0 <= low <= self.images_per_request:
            raise_config(
                f"dataset.min_images_per_request={low} must be in [0, images_per_request="
                f"{self.images_per_request}]"
            )
        if not self.image_sizes:
            raise_config("dataset.image_sizes needs at least one [width, height]")
        for i, size in enumerate(self.image_sizes):
            if len(size) != 2 or min(int(v) for v in size) <= 0:
                raise_config(
                    f"dataset.image_sizes[{i}]={list(size)} must be [width, height], both > 0"
                )
        check_choice("dataset", "image_format", self.image_format, IMAGE_FORMATS)


GROUP_DISTRIBUTIONS = ("uniform", "zipf")


@dataclass
class SharedPrefixDatasetConfig(DatasetConfig):
    """Groups of prompts that share a prefix (a system prompt, few-shot examples, a document).

    `num_groups` prefixes of `prefix_len` tokens; each prompt is its group's prefix and a suffix
    of its own, `prefix_len + suffix_len` tokens as the engine sees them (special and chat
    template tokens counted; the ones before the content fall in the prefix). Groups get
    `prompts_per_group` prompts each (None: the workload's count spread over them), or with
    `group_distribution=zipf` that total split in proportion to 1 / rank^zipf_exponent; the
    groups' prompts are interleaved in a seeded order (`sweep.datasets.shared_prefix`).
    """

    name: str = "shared_prefix"
    num_groups: int = 8
    prompts_per_group: int | None = None
    prefix_len: int = 512
    suffix_len: int = 64
    group_distribution: str = "uniform"
    zipf_exponent: float = 1.0

    def __post_init__(self) -> None:
        check_positive(
            "dataset",
            num_groups=self.num_groups,
            prompts_per_group=self.prompts_per_group,
            prefix_len=self.prefix_len,
            suffix_len=self.suffix_len,
            zipf_exponent=self.zipf_exponent,
        )
        check_choice("dataset", "group_distribution", self.group_distribution, GROUP_DISTRIBUTIONS)


OVERFLOW_MODES = ("refuse", "truncate")
THINK_TIME_DISTS = ("fixed", "exponential", "uniform")


@dataclass
class MultiTurnDatasetConfig(DatasetConfig):
    """Conversations: each turn sends its session's history and a new user message.

    A session has `num_turns` user messages of exactly `user_len` tokens each (special tokens
    excluded). Between a reply and the next turn the user thinks `think_time_s`: `fixed`, or
    drawn with `seed` from an `exponential` of that mean or a `uniform` on [0, 2 x mean]. A turn
    that would not fit the model's context is refused, or sent with its session's oldest turns
    dropped (`on_overflow=truncate`). The load generator runs the sessions
    (`sweep.loadgen.sessions`).

    With `tools` (a shipped tool set or a JSON file of OpenAI tools, `sweep.core.tools`) every
    request offers them, asking as `tool_choice` says (`auto`, `required`, `none` or a function's
    name). A reply that calls tools is answered in the session's next turn: after the tool's
    latency (`tool_latency_s`, `fixed` or drawn like think times by `tool_latency_dist`), one
    tool result per call, each the turn's drawn message, instead of a user message.
    """

    name: str = "multi_turn"
    num_turns: int = 3
    user_len: int = 64
    think_time_s: float = 0.0
    think_time_dist: str = "fixed"
    on_overflow: str = "refuse"
    tools: str | None = None
    tool_choice: str = "auto"
    tool_latency_s: float = 0.0
    tool_latency_dist: str = "fixed"

    def __post_init__(self) -> None:
        check_positive("dataset", num_turns=self.num_turns, user_len=self.user_len)
        for key in ("think_time_s", "tool_latency_s"):
            if getattr(self, key) < 0:
                raise_config(f"dataset.{key} must be >= 0, got {getattr(self, key)}")
        check_choice("dataset", "think_time_dist", self.think_time_dist, THINK_TIME_DISTS)
        check_choice("dataset", "tool_latency_dist", self.tool_latency_dist, THINK_TIME_DISTS)
        check_choice("dataset", "on_overflow", self.on_overflow, OVERFLOW_MODES)


TOO_LONG_MODES = ("refuse", "skip", "truncate")


@dataclass
class TraceDatasetConfig(DatasetConfig):
    """A request trace replayed at its own times (`docs/traces.md`): a file or a trace's name.

    `speedup` divides the trace's time offsets; `block_size` is the tokens of one `hash_ids`
    block (Mooncake's traces use 512); `seed` draws the tokens of the prompts. `start_s` and
    `duration_s` take a window of the trace (seconds of the trace's own time from its first
    row; None: to its end). A row whose input and output do not fit the context
    (`sweep.datasets.context`) is refused (`too_long=refuse`: nothing runs), left out (`skip`)
    or sent with its input, then its output, cut to fit (`truncate`).
    """

    name: str = "trace"
    path: str = MISSING
    speedup: float = 1.0
    block_size: int = 512
    start_s: float = 0.0
    duration_s: float | None = None
    too_long: str = "refuse"
    # A column of the trace naming each row's LoRA adapter (`workload.lora_assignment=dataset`
    # sends each request to it); None: the trace names none.
    lora_column: str | None = None

    def __post_init__(self) -> None:
        check_positive(
            "dataset", speedup=self.speedup, block_size=self.block_size, duration_s=self.duration_s
        )
        if self.start_s < 0:
            raise_config(f"dataset.start_s must be >= 0, got {self.start_s}")
        check_choice("dataset", "too_long", self.too_long, TOO_LONG_MODES)
