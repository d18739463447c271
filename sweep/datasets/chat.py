"""Prompts as a chat request sends them: the model's chat template counted in every length.

A chat request (`backend.api=chat`) carries a prompt as one user message; the server renders the
model's chat template around it and tokenizes the result without adding special tokens again,
which is vLLM's default for chat. `ChatTokenizer` wraps the model's tokenizer so that encoding a
text with special tokens gives exactly those ids: every dataset generator then counts, fits and
records lengths with the template included, unchanged, and an in-process engine asked for chat is
handed the same ids (its requests carry the prompt's token ids). Encoding without special tokens,
decoding and everything else are the wrapped tokenizer's own.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sweep.core.errors import DatasetError


class Encoding(NamedTuple):
    """What a tokenizer call returns, reduced to the ids the generators read."""

    input_ids: Any  # one list of ids, or a list of them for a list of texts


class ChatTokenizer:
    """A tokenizer whose special-token encoding renders the chat template around the text."""

    def __init__(self, tokenizer: Any) -> None:
        if not tokenizer.chat_template:
            raise DatasetError(
                "backend.api=chat but the model's tokenizer has no chat template; use "
                "api=completions or a model whose tokenizer_config.json carries one"
            )
        self.tokenizer = tokenizer

    def render(self, text: str) -> str:
        """The text a chat server tokenizes for a request whose one user message is `text`."""
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )

    def __call__(self, text: str | list[str], add_special_tokens: bool = True) -> Encoding:
        """Ids of `text` (or of each text): templated with special tokens, else plain content."""
        texts = [text] if isinstance(text, str) else list(text)
        if add_special_tokens:
            texts = [self.render(t) for t in texts]
        ids = self.tokenizer(texts, add_special_tokens=False).input_ids if texts else []
        return Encoding(ids[0] if isinstance(text, str) else ids)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """Tokens the template adds around an empty message (the fitting loops correct the rest)."""
        return len(self("").input_ids)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __getattr__(self, name: str) -> Any:
        if name == "tokenizer":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.tokenizer, name)
