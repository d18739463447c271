"""How the sim server counts a request's prompt tokens for its `usage.prompt_tokens`.

Given a model folder (`--tokenizer DIR`, which the sim backend passes when its model has a
`tokenizer.json`), the server counts as a real server of that model does: a completions prompt
with the tokenizer's special tokens (the BOS its post-processor adds), a chat request's messages
rendered through the chat template of `tokenizer_config.json` (as transformers renders it: a
sandboxed Jinja environment, blocks trimmed, the generation prompt added) and then tokenized
without special tokens. Only the `tokenizers` library and Jinja are imported (a few hundredths
of a second), so the server still starts at once. A long prompt is counted in a worker thread
(`is_long`), as a real server tokenizes apart from the loop that stamps arrivals. A prompt sent
as token ids counts its ids.
Without a tokenizer, or for a chat request whose template cannot render, a text counts its
whitespace-separated words: a stand-in, which the trial's input check then reports as counted
otherwise than by the client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# About 2 us a token here: past this many characters (some 500 tokens, ~1 ms) a prompt is counted
# in a thread, so that the stamps of other requests' arrivals are not held up behind it.
LONG_PROMPT_CHARS = 2000


class PromptCounter:
    """Counts prompt tokens with a model's tokenizer, or words without one."""

    def __init__(self, model_dir: str | None = None) -> None:
        self._tokenizer = None
        self._template = None
        self._specials: dict[str, str] = {}
        if model_dir:
            self._load(Path(model_dir))

    def _load(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        self._specials = {
            key: _token_text(config.get(key))
            for key in ("bos_token", "eos_token", "unk_token", "pad_token")
            if config.get(key) is not None
        }
        template = config.get("chat_template")
        if isinstance(template, str):
            from jinja2 import ext
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols]
            )
            env.globals["raise_exception"] = _raise
            self._template = env.from_string(template)

    def count(self, body: dict, api: str) -> int:
        """The prompt tokens of a request body on `api` (`chat` or `completions`)."""
        if api == "chat":
            messages = [
                {**m, "content": message_text(m.get("content", ""))}
                for m in body.get("messages") or []
            ]
            if self._tokenizer is not None and self._template is not None:
                try:
                    text = self._template.render(
                        messages=messages, add_generation_prompt=True, **self._specials
                    )
                except Exception:  # a template this renderer cannot run: words, as without one
                    text = None
                if text is not None:
                    return self._encoded(text, special=False)
            return sum(len(m["content"].split()) for m in messages)
        prompt = body.get("prompt", "")
        if isinstance(prompt, list):
            return len(prompt)
        if self._tokenizer is not None:
            return self._encoded(str(prompt), special=True)
        return len(str(prompt).split())

    def _encoded(self, text: str, special: bool) -> int:
        # encode_batch lets go of the GIL while it runs (encode does not): a long prompt counted
        # in a worker thread (`is_long`) leaves the server's event loop free meanwhile.
        return len(self._tokenizer.encode_batch([text], add_special_tokens=special)[0].ids)


def is_long(body: dict) -> bool:
    """Whether a body's prompt is long enough (LONG_PROMPT_CHARS) to count off the event loop."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return len(prompt) > LONG_PROMPT_CHARS
    size = sum(len(message_text(m.get("content", ""))) for m in body.get("messages") or [])
    return size > LONG_PROMPT_CHARS


def message_text(content: object) -> str:
    """A message's text: its content, or the text of its content parts (images left out)."""
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return str(content)


def _token_text(token: Any) -> str:
    """A special token as tokenizer_config.json gives it: a string or an AddedToken object."""
    return str(token.get("content", "")) if isinstance(token, dict) else str(token)


def _raise(message: str) -> None:
    raise ValueError(message)
