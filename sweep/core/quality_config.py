"""The `quality` group's config dataclass: scoring a text set through each deployment.

`quality=off` (the default) scores nothing. `quality=on` feeds a fixed set of texts through every
deployment's backend once, teacher-forced (`backends.scoring`, run by `sweep.worker.quality_run`),
and records each next token's log-probability and its top-K alternatives beside the results;
`analysis.report.quality` compares each configuration with the baseline deployment. Re-exported by
`sweep.core.config`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep.core.errors import check_choice, check_positive

QUALITY_TOO_LONG = ("refuse", "truncate")


@dataclass
class QualityConfig:
    """What to score and against whom.

    Attributes:
        name: `off` or `on`.
        texts: a local file of texts: one text a line, or JSON Lines (`.jsonl`: a JSON string a
            line, or an object with `text_field`); None: the project's bundled English corpus
            (`sweep/data/corpus.jsonl`), which needs no network.
        text_field: the field of a JSON Lines object that holds the text.
        max_texts: score only the first this many texts (None: all).
        top_k: how many of the most likely next tokens are kept per position.
        too_long: a text longer than the model's context: `refuse` (an error naming it) or
            `truncate` (its first tokens up to the context).
        baseline: the deployment the others are compared against: a `backend` option of the
            grid (`engines/hf_fp32`) or a backend name (`hf`; the first such deployment);
            None: the first deployment whose backend is recorded as the baseline (plain
            transformers). Analysis's `--baseline` overrides it.
    """

    name: str = "off"
    texts: str | None = None
    text_field: str = "text"
    max_texts: int | None = None
    top_k: int = 20
    too_long: str = "refuse"
    baseline: str | None = None

    def __post_init__(self) -> None:
        check_choice("quality", "name", self.name, ("off", "on"))
        check_choice("quality", "too_long", self.too_long, QUALITY_TOO_LONG)
        check_positive("quality", max_texts=self.max_texts, top_k=self.top_k)

    @property
    def enabled(self) -> bool:
        """Whether deployments score the set."""
        return self.name == "on"
