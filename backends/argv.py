"""Command-line flags of launched servers, built from config maps without letting config smuggle.

Every server backend (vLLM, TGI, ...) turns its engine settings and the user's free-form
`backend.extra_args` into argv through `flag_args`. A server is started from an argv list, never a
shell string, so quoting is not the danger; the danger is a config value that the server's own
parser reads as a flag (`"--trust-remote-code"` as a value, or a key like `"x --api-key k"`).
`flag_args` therefore allows only plain flag names as keys, and rejects any string value that
begins with `-` or holds a newline or NUL. Config schemas call it in `__post_init__`, so a bad
value fails at composition as one line naming the key; backends call it again when they launch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from sweep.core.errors import ConfigError

FLAG_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def flag_args(
    flags: Mapping[str, Any], section: str = "backend.extra_args", reserved: Iterable[str] = ()
) -> list[str]:
    """The argv of `{flag: value}`: each flag and each value is its own element.

    `True` gives the bare `--flag`; `False` and `None` leave the flag out (write
    `no-FLAG: true` to switch off a flag that is on by default); a dict becomes one JSON
    argument (what vLLM's dict-typed flags parse); a list gives one argument per item.

    Raises:
        ConfigError: naming `section.key` for a key that is not a plain flag name, a key in
            `reserved` (flags the backend sets itself, such as the port), or an unsafe value.
    """
    reserved = set(reserved)
    argv: list[str] = []
    for key, value in flags.items():
        where = f"{section}.{key}"
        if not isinstance(key, str) or not FLAG_NAME.match(key):
            raise ConfigError(
                f"{section} key {key!r} is not a plain flag name (lowercase letters, digits, '-')"
            )
        if key in reserved:
            raise ConfigError(f"{where} is set by the backend itself; remove it")
        if value is None or value is False:
            continue
        argv.append(f"--{key}")
        if value is True:
            continue
        items = value if isinstance(value, list | tuple) else [value]
        argv.extend(value_text(where, item) for item in items)
    return argv


def field_flags(config: Any, leave_out: Iterable[str]) -> dict[str, Any]:
    """`{flag-name: value}` of a config dataclass's fields, except those in `leave_out`.

    A server backend's typed settings are its server's flags under the same names
    (`max_num_seqs` is `--max-num-seqs`): written once, in the dataclass.
    """
    leave_out = set(leave_out)
    return {
        f.name.replace("_", "-"): getattr(config, f.name)
        for f in fields(config)
        if f.name not in leave_out
    }


def value_text(where: str, value: Any) -> str:
    """`value` as one argv element; raises ConfigError naming `where` when it is unsafe."""
    if isinstance(value, Mapping):
        # JSON of a dict starts with "{" and escapes control characters: always one safe argument.
        return json.dumps(dict(value), sort_keys=True)
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, number, bool, list or dict, got {value!r}")
    if value.startswith("-"):
        raise ConfigError(f"{where}={value!r} begins with '-' and would be read as a flag")
    if "\n" in value or "\r" in value or "\0" in value:
        raise ConfigError(f"{where} contains a newline or NUL character")
    return value


def check_values(section: str, **values: Any) -> None:
    """Check typed settings that become argv values (None is allowed): see `value_text`."""
    for key, value in values.items():
        if value is not None:
            value_text(f"{section}.{key}", value)


def check_extra_args(
    section: str, extra_args: Mapping[str, Any], typed: Iterable[str], reserved: Iterable[str]
) -> None:
    """Validate a backend's `extra_args` at config time.

    A key that duplicates a typed setting (`max-num-seqs` beside `max_num_seqs`) is refused,
    so that one value cannot silently override the other on the command line.
    """
    typed_flags = {name.replace("_", "-"): name for name in typed}
    for key in extra_args:
        if key in typed_flags:
            raise ConfigError(
                f"{section}.{key} duplicates backend.{typed_flags[key]}; set that instead"
            )
    flag_args(extra_args, section, reserved)
