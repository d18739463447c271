"""Exceptions that reach the user as one clear line instead of a traceback."""

from __future__ import annotations


class SweepError(Exception):
    """Base of every error the CLI prints as a single line and exits non-zero on."""


class ConfigError(SweepError):
    """A configuration value, key, group option or grid axis is invalid."""


class DatasetError(SweepError):
    """A dataset cannot be loaded or cannot produce the requested prompts."""


class BackendError(SweepError):
    """A backend cannot start or failed while serving; `kind` names the failure class."""

    def __init__(self, message: str, kind: str = "backend_error") -> None:
        super().__init__(message)
        self.kind = kind


class ResultsNotSaved(SweepError):
    """The results folder refused a file (a full disk, a bucket gone); the message names both."""


class MissingExtraError(SweepError):
    """An optional engine is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"backend needs the '{package}' package: pip install -e '.[{extra}]'")


def check_positive(section: str, **values: float | int | None) -> None:
    """Raise ConfigError naming the first value that is zero or negative (None is allowed)."""
    for key, value in values.items():
        if value is not None and value <= 0:
            raise ConfigError(f"{section}.{key} must be > 0, got {value}")


def check_choice(section: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ConfigError when `value` is not one of `choices`, listing them."""
    if value not in choices:
        raise ConfigError(
            f"{section}.{key}={value!r} is not valid; choose one of: {', '.join(choices)}"
        )


def raise_config(message: str) -> None:
    """Raise a ConfigError (kept as a function so validators read as one line)."""
    raise ConfigError(message)
