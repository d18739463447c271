"""Keeps secrets out of everything the tool writes: results, logs, YAML and tracking config.

A secret is any environment variable named HF_TOKEN, WANDB_API_KEY or ending in _TOKEN, _KEY or
_SECRET (also PASSWORD). Config keys with such names are redacted, and any occurrence of a secret's
value inside a string is replaced, wherever it came from.
"""

from __future__ import annotations

import os
import re
from typing import Any

SECRET_NAME = re.compile(r"(^HF_TOKEN$|^WANDB_API_KEY$|_TOKEN$|_KEY$|_SECRET$|PASSWORD)", re.I)
REDACTED = "***"
MIN_SECRET_LEN = 6  # shorter values would redact ordinary words


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of the secret-named variables of `environ` (default: this process)."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def scrub_text(text: str, secrets: list[str] | None = None) -> str:
    """`text` with every secret value replaced by `***`."""
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, REDACTED)
    return text


def scrub(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a nested dict/list/str structure with secret keys and values redacted."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and SECRET_NAME.search(k) else scrub(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        return scrub_text(value, secrets)
    return value
