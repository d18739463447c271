"""Command-line flags of launched servers, built from config maps without letting config smuggle.

Every server backend (vLLM, TGI, ...) turns its engine settings and the user's free-form
`backend.extra_args` into argv through `flag_args`. A server is started from an argv list, never a
shell string, so quoting is not the danger; the danger is a config value that the server's own
parser reads as a flag (`"--trust-remote-code"` as a value, or a key like `"x --api-key k"`).
`flag_args` therefore allows only plain flag names as keys, and rejects any string value that
begins with `-` or holds a newline or NUL. Config schemas call it in `__post_init__`, so a bad
value fails at composition as one line naming the key; backends call it again when they launch.
Servers spell flags two ways (`FlagStyle`): argparse's `--max-num-seqs` with bare booleans (vLLM,
SGLang, TGI), or pydantic field names, `--n_ctx`, with `true`/`false` values (llama-cpp-python's
server). `module_argv` puts a Python server's whole command line together.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from sweep.core.errors import ConfigError


@dataclass(frozen=True)
class FlagStyle:
    """How a server's command line spells its flags.

    Attributes:
        separator: between the words of a flag: `-` (`--max-num-seqs`) or `_` (`--n_ctx`).
        valued_bools: a boolean is `--flag true` or `--flag false` (parsers built from pydantic
            settings), rather than a bare `--flag` for true and nothing for false (argparse's
            `store_true`).
    """

    separator: str = "-"
    valued_bools: bool = False

    @property
    def name_pattern(self) -> re.Pattern[str]:
        """What a flag name may be: lowercase words joined by `separator`."""
        return re.compile(rf"^[a-z0-9][a-z0-9{re.escape(self.separator)}]*$")

    def flag(self, field_name: str) -> str:
        """The flag of a config field (`max_num_seqs` is `max-num-seqs` in the dashed style)."""
        return field_name.replace("_", self.separator)


DASHED = FlagStyle()  # argparse: vLLM, SGLang, TGI's launcher
SNAKE = FlagStyle("_", valued_bools=True)  # pydantic settings: llama-cpp-python's server


def flag_args(
    flags: Mapping[str, Any],
    section: str = "backend.extra_args",
    reserved: Iterable[str] = (),
    style: FlagStyle = DASHED,
) -> list[str]:
    """The argv of `{flag: value}`: each flag and each value is its own element.

    `True` gives the bare `--flag`; `False` and `None` leave the flag out (write
    `no-FLAG: true` to switch off a flag that is on by default); a dict becomes one JSON
    argument (what vLLM's dict-typed flags parse); a list gives one argument per item. In a
    style with `valued_bools`, a boolean is `--flag true` or `--flag false` instead.

    Raises:
        ConfigError: naming `section.key` for a key that is not a plain flag name, a key in
            `reserved` (flags the backend sets itself, such as the port), or an unsafe value.
    """
    reserved = set(reserved)
    pattern = style.name_pattern
    argv: list[str] = []
    for key, value in flags.items():
        where = f"{section}.{key}"
        if not isinstance(key, str) or not pattern.match(key):
            raise ConfigError(
                f"{section} key {key!r} is not a plain flag name (lowercase letters, digits, "
                f"'{style.separator}')"
            )
        if key in reserved:
            raise ConfigError(f"{where} is set by the backend itself; remove it")
        if style.valued_bools and isinstance(value, bool):
            argv += [f"--{key}", str(value).lower()]
            continue
        if value is None or value is False:
            continue
        argv.append(f"--{key}")
        if value is True:
            continue
        items = value if isinstance(value, list | tuple) else [value]
        argv.extend(value_text(where, item) for item in items)
    return argv


def field_flags(config: Any, leave_out: Iterable[str], style: FlagStyle = DASHED) -> dict[str, Any]:
    """`{flag-name: value}` of a config dataclass's fields, except those in `leave_out`.

    A server backend's typed settings are its server's flags under the same names
    (`max_num_seqs` is `--max-num-seqs`): written once, in the dataclass.
    """
    leave_out = set(leave_out)
    return {
        style.flag(f.name): getattr(config, f.name)
        for f in fields(config)
        if f.name not in leave_out
    }


def module_argv(
    module: str,
    typed: Mapping[str, Any],
    extra_args: Mapping[str, Any],
    reserved: Iterable[str],
    defaults: Mapping[str, Any] | None = None,
    style: FlagStyle = DASHED,
) -> list[str]:
    """`python -m module` with the backend's typed flags, then `defaults`, then `extra_args`.

    A default that `extra_args` sets is left out, so the user's value is the only one on the
    command line; `extra_args` may not set a flag in `reserved` (the model, the port, ...).
    """
    kept = {k: v for k, v in (defaults or {}).items() if k not in extra_args}
    return [
        sys.executable, "-m", module,
        *flag_args(typed, "backend", style=style),
        *flag_args(kept, "backend", style=style),
        *flag_args(extra_args, "backend.extra_args", reserved, style),
    ]  # fmt: skip


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
    section: str,
    extra_args: Mapping[str, Any],
    typed: Iterable[str],
    reserved: Iterable[str],
    style: FlagStyle = DASHED,
) -> None:
    """Validate a backend's `extra_args` at config time.

    A key that duplicates a typed setting (`max-num-seqs` beside `max_num_seqs`) is refused,
    so that one value cannot silently override the other on the command line.
    """
    typed_flags = {style.flag(name): name for name in typed}
    for key in extra_args:
        if key in typed_flags:
            raise ConfigError(
                f"{section}.{key} duplicates backend.{typed_flags[key]}; set that instead"
            )
    flag_args(extra_args, section, reserved, style)
