"""A second generated model for the tests: another tokenizer and another size than the tiny one.

`build_other_model(folder)` trains, with the tiny model's own recipe (`backends.models.tiny`), a
byte-level BPE of a few hundred tokens on words the tiny model's corpus never uses (minerals,
weather, instruments), so the same prompt text counts otherwise under each, and writes a
random-weight Llama of 3 layers beside it (the tiny model has 2): what a user's own `model.path`
looks like to the sweep, with no hub.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from backends.models.tiny import train_tokenizer, write_llama

VOCAB_SIZE = 300
_WORDS = (
    "quartz basalt granite obsidian feldspar mica garnet topaz jasper onyx "
    "drizzle monsoon sleet hail squall gale typhoon fog frost thaw "
    "oboe cello tuba harp lute sitar banjo fiddle zither kazoo"
).split()


def sentences(count: int = 400) -> list[str]:
    """A deterministic corpus of the other words, three to nine a sentence."""
    cycle = itertools.cycle(_WORDS)
    return [
        " ".join(next(cycle) for _ in range(3 + i % 7)).capitalize() + "." for i in range(count)
    ]


def build_other_model(folder: Path) -> Path:
    """Write the tokenizer and model into `folder` (made if absent) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(sentences(), VOCAB_SIZE, chat_template=None, model_max_length=2048)
    write_llama(folder, tokenizer, layers=3, intermediate_size=384, max_positions=2048, seed=1)
    return folder
