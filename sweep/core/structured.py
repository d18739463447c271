"""Structured outputs: the constraint a trial's requests carry, and each answer checked against it.

`workload.structured` names the kind, `workload.structured_spec` the constraint: one of the
shipped ones (`SHIPPED`) or a file of the user's. With `workload.structured_enforce` the server
is asked to keep to it (a JSON schema as OpenAI's `response_format`, a regex, a choice list or a
grammar as vLLM's `structured_outputs`); without, the same requests go out unconstrained. Either
way every completed answer is checked here, so validity stands beside speed: a JSON answer
against its schema (`jsonschema`, the reference implementation); without the whitespace around
it, a regex by a full match, a choice by equality, a grammar (Lark's syntax, which vLLM's
xgrammar backend takes as well) by parsing it with `lark`.

A user's file: `json_schema`, a JSON Schema document (`.json`); `regex`, the pattern (the file's
text, stripped); `choice`, a JSON list of strings or one choice per line; `grammar`, a Lark
grammar whose start rule is `start`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from sweep.core.errors import ConfigError

NONE, JSON_SCHEMA, REGEX, CHOICE, GRAMMAR = "none", "json_schema", "regex", "choice", "grammar"
KINDS = (NONE, JSON_SCHEMA, REGEX, CHOICE, GRAMMAR)
REASON_CHARS = 200  # an invalid answer's reason: one line
SHOWN_CHARS = 60  # of the answer, after the reason

# The shipped constraints, by kind: what each is called and its value.
SHIPPED: dict[str, dict[str, Any]] = {
    JSON_SCHEMA: {
        "person": {
            "type": "object",
            "properties": {
                # A pattern, not free text: it bounds the length and keeps raw control
                # characters out (vLLM 0.32's xgrammar let some through on a byte-level
                # tokenizer's free strings, which no JSON parser takes).
                "name": {"type": "string", "pattern": "^[A-Z][a-z]{1,11}$"},
                "age": {"type": "integer", "minimum": 0, "maximum": 130},
                "city": {"enum": ["Paris", "Lagos", "Lima", "Osaka"]},
            },
            "required": ["name", "age", "city"],
            "additionalProperties": False,
        },
    },
    REGEX: {
        "iso_date": r"(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])",
        "phone": r"\+\d{1,3} \d{3} \d{3} \d{4}",
    },
    CHOICE: {
        "sentiment": ["positive", "negative", "neutral"],
    },
    GRAMMAR: {
        "arithmetic": (
            "start: expr\n"
            'expr: term (("+" | "-") term)*\n'
            'term: NUMBER | "(" expr ")"\n'
            "NUMBER: /[0-9]{1,4}/\n"
        ),
    },
}
DEFAULT_SPEC = {
    JSON_SCHEMA: "person", REGEX: "iso_date", CHOICE: "sentiment", GRAMMAR: "arithmetic"
}  # fmt: skip


@dataclass(frozen=True)
class Constraint:
    """One trial's constraint: its kind, its name (shipped, or the file's), its value."""

    kind: str
    name: str
    value: Any

    def body(self) -> dict[str, Any]:
        """The request body's fields that ask the server to keep to it."""
        if self.kind == JSON_SCHEMA:  # OpenAI's field, which vLLM, SGLang and others take
            schema = {"name": self.name, "schema": self.value, "strict": True}
            return {"response_format": {"type": "json_schema", "json_schema": schema}}
        return {"structured_outputs": {self.kind: self.value}}  # vLLM's own

    def check(self, text: str) -> str | None:
        """Why `text` does not keep to the constraint, in one line; None where it does."""
        reason = self._reason(text)
        if reason is None:
            return None
        shown = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."
        reason = f"{' '.join(reason.split())}; the answer: {shown!r}"
        return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 3] + "..."

    def _reason(self, text: str) -> str | None:
        if self.kind == JSON_SCHEMA:
            try:
                answer = json.loads(text)
            except ValueError as exc:
                return f"not JSON: {exc}"
            error = next(iter(self._validator.iter_errors(answer)), None)
            return None if error is None else f"schema: {error.message}"
        text = text.strip()  # the space a tokenizer puts before a reply's first word
        if self.kind == REGEX:
            return None if self._pattern.fullmatch(text) else "does not match the regex"
        if self.kind == CHOICE:
            return None if text in self.value else "not one of the choices"
        try:
            self._parser.parse(text)
        except Exception as exc:  # lark's errors share no base but Exception
            return f"grammar: {type(exc).__name__}"
        return None

    @cached_property
    def _validator(self) -> Any:
        from jsonschema.validators import validator_for

        return validator_for(self.value)(self.value)

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        return re.compile(self.value)

    @cached_property
    def _parser(self) -> Any:
        import lark

        return lark.Lark(self.value, start="start", parser="earley")


def load_constraint(kind: str, spec: str | None) -> Constraint | None:
    """The constraint `workload.structured` and `structured_spec` name; None for `none`.

    Raises:
        ConfigError: one line: an unknown kind or shipped name, a file that is missing or does
            not hold that kind (a schema that is not JSON Schema, a regex that does not compile,
            an empty choice list, a grammar Lark cannot read).
    """
    if kind not in KINDS:
        raise ConfigError(
            f"workload.structured={kind!r} is not valid; choose one of: {', '.join(KINDS)}"
        )
    if kind == NONE:
        if spec is not None:
            raise ConfigError(
                f"workload.structured_spec={spec!r} needs workload.structured "
                f"(one of: {', '.join(KINDS[1:])})"
            )
        return None
    spec = spec or DEFAULT_SPEC[kind]
    if spec in SHIPPED[kind]:
        return _checked(Constraint(kind, spec, SHIPPED[kind][spec]), "shipped")
    path = Path(spec).expanduser()
    if not path.is_file():
        shipped = ", ".join(SHIPPED[kind])
        raise ConfigError(
            f"workload.structured_spec={spec!r} is neither a shipped {kind} ({shipped}) nor a file"
        )
    return _checked(Constraint(kind, path.stem, _read(kind, path)), str(path))


def _read(kind: str, path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if kind == JSON_SCHEMA:
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"workload.structured_spec: {path} is not JSON ({exc})") from None
    if kind == CHOICE:
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                return json.loads(stripped)
            except ValueError as exc:
                raise ConfigError(f"workload.structured_spec: {path}: {exc}") from None
        return [line.strip() for line in text.splitlines() if line.strip()]
    return text.strip() if kind == REGEX else text


def _checked(constraint: Constraint, where: str) -> Constraint:
    """The constraint, once its value holds what its kind needs."""
    kind, value = constraint.kind, constraint.value
    bad = None
    if kind == JSON_SCHEMA:
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        if not isinstance(value, dict):
            bad = "a JSON Schema is an object"
        else:
            try:
                validator_for(value).check_schema(value)
            except SchemaError as exc:
                bad = f"not JSON Schema: {exc.message}"
    elif kind == REGEX:
        try:
            re.compile(value)
        except re.error as exc:
            bad = f"the regex does not compile: {exc}"
    elif kind == CHOICE:
        if not value or not all(isinstance(c, str) and c for c in value):
            bad = "a choice list is a non-empty list of non-empty strings"
    else:
        try:
            constraint._parser  # noqa: B018 - building the parser checks the grammar
        except Exception as exc:
            bad = f"Lark cannot read the grammar: {' '.join(str(exc).split())[:160]}"
    if bad:
        raise ConfigError(f"workload.structured_spec ({where} {kind}): {bad}")
    return constraint
