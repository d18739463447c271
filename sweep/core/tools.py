"""Tool calling: the tools a session offers, how the model is asked to call, each call checked.

`dataset.tools` names the tool set, one of the shipped ones (`SHIPPED`) or a JSON file of the
user's: a list of OpenAI tools (`{"type": "function", "function": {"name", "description",
"parameters"}}`), each function's `parameters` a JSON Schema. `dataset.tool_choice` is OpenAI's:
`auto` (the model decides), `required` (it must call one), `none`, or the name of one of the set's
functions (it must call that one). vLLM keeps to `required` and a named function with its
structured-output backend, given a tool parser that takes them (`--tool-call-parser`); `auto`
needs a parser that reads the model's own call format and `--enable-auto-tool-choice`.

Every call a reply made is checked here after the load, as a structured answer is: its function
must be one the set offers and its arguments a JSON object valid against that function's
`parameters` (`jsonschema`, the reference implementation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from sweep.core.errors import ConfigError

AUTO, REQUIRED, NONE = "auto", "required", "none"
CHOICES = (AUTO, REQUIRED, NONE)  # or a function's name
REASON_CHARS = 200  # an invalid call's reason: one line

# The shipped tool sets: an agent's few lookups, each argument bounded (an enum, a pattern, a
# range) so that a model kept to the schema by a grammar answers briefly.
SHIPPED: dict[str, list[dict[str, Any]]] = {
    "agent": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The current weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"enum": ["Paris", "Lagos", "Lima", "Osaka"]},
                        "unit": {"enum": ["celsius", "fahrenheit"]},
                    },
                    "required": ["city", "unit"],
                    "additionalProperties": False,
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "search_docs",
                "description": "Search the documentation; returns the best passages.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "pattern": "^[a-z]{2,12}( [a-z]{2,12}){0,2}$"},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": 5},
                    },
                    "required": ["query", "top_k"],
                    "additionalProperties": False,
                },
            },
        },
    ],
}


@dataclass(frozen=True)
class ToolCall:
    """One call a reply made: its id, its function's name, its arguments' text as streamed."""

    id: str
    name: str
    arguments: str

    def message(self) -> dict[str, Any]:
        """The call as the assistant message of a conversation carries it back."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class ToolSet:
    """A session's tools: their name (shipped, or the file's) and the OpenAI `tools` list."""

    name: str
    tools: tuple[dict[str, Any], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The functions' names, in the set's order."""
        return tuple(t["function"]["name"] for t in self.tools)

    def body(self, choice: str) -> dict[str, Any]:
        """The request body's fields offering the tools and asking for a call as `choice` says."""
        if choice in CHOICES:
            return {"tools": list(self.tools), "tool_choice": choice}
        return {
            "tools": list(self.tools),
            "tool_choice": {"type": "function", "function": {"name": choice}},
        }

    def check(self, call: ToolCall) -> str | None:
        """Why `call` is not a valid call of one of the tools (one line); None when it is."""
        validator = self._validators.get(call.name)
        if validator is None:
            return _short(f"unknown function {call.name!r} (the set has {', '.join(self.names)})")
        try:
            arguments = json.loads(call.arguments)
        except json.JSONDecodeError as exc:
            return _short(f"arguments not JSON ({exc.msg}): {call.arguments[:60]!r}")
        error = next(iter(validator.iter_errors(arguments)), None)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "arguments"
        return _short(f"{call.name} {where}: {error.message}")

    @cached_property
    def _validators(self) -> dict[str, Any]:
        from jsonschema import Draft202012Validator

        return {
            t["function"]["name"]: Draft202012Validator(t["function"].get("parameters") or {})
            for t in self.tools
        }


def load_tools(spec: str | None) -> ToolSet | None:
    """The tool set `spec` names (shipped, or a file); None without one.

    Raises:
        ConfigError: one line: no such set or file, a file that is not a list of OpenAI
            function tools, a function without a name or with a `parameters` that is not a
            JSON Schema, two functions of one name.
    """
    if spec is None:
        return None
    if spec in SHIPPED:
        return _checked(ToolSet(spec, tuple(SHIPPED[spec])), f"dataset.tools={spec}")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"dataset.tools={spec!r} is neither a shipped tool set "
            f"({', '.join(SHIPPED)}) nor a file"
        )
    try:
        tools = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"dataset.tools: {path} is not JSON: {exc}") from None
    if isinstance(tools, dict) and "tools" in tools:
        tools = tools["tools"]  # a request body's fragment
    if not isinstance(tools, list) or not tools:
        raise ConfigError(f"dataset.tools: {path} must hold a non-empty list of OpenAI tools")
    return _checked(ToolSet(path.stem, tuple(tools)), f"dataset.tools: {path}")


def check_tool_choice(tools: ToolSet | None, choice: str) -> None:
    """Refuse a `tool_choice` the tools cannot take (one line)."""
    if tools is None:
        if choice != AUTO:
            raise ConfigError(f"dataset.tool_choice={choice} needs dataset.tools")
        return
    if choice not in CHOICES and choice not in tools.names:
        raise ConfigError(
            f"dataset.tool_choice={choice!r} is none of {', '.join(CHOICES)} nor a function of "
            f"dataset.tools={tools.name} ({', '.join(tools.names)})"
        )


def _checked(tools: ToolSet, where: str) -> ToolSet:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    seen: set[str] = set()
    for i, tool in enumerate(tools.tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
        ):
            raise ConfigError(
                f'{where}: tool {i} is not {{"type": "function", "function": {{...}}}}'
            )
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: tool {i}'s function has no name")
        if name in seen:
            raise ConfigError(f"{where}: two functions are called {name!r}")
        seen.add(name)
        parameters = function.get("parameters", {})
        try:
            if not isinstance(parameters, dict):
                raise SchemaError(f"{parameters!r} is not an object")
            Draft202012Validator.check_schema(parameters)
        except SchemaError as exc:
            raise ConfigError(
                f"{where}: {name}'s parameters are not a JSON Schema: {exc.message}"
            ) from None
    return tools


def _short(reason: str) -> str:
    line = " ".join(reason.split())
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."


def assemble(pieces: list[tuple[int, str | None, str | None, str]] | None) -> tuple[ToolCall, ...]:
    """The calls a reply made, from its streamed deltas, by index.

    A call's id and name are the first a piece gave (later pieces leave them out, or null), its
    arguments every piece's, in order.
    """
    if not pieces:
        return ()
    calls: dict[int, list] = {}
    for index, cid, name, arguments in pieces:
        call = calls.setdefault(index, [None, None, []])
        call[0] = call[0] or cid
        call[1] = call[1] or name
        call[2].append(arguments)
    return tuple(
        ToolCall(cid or f"call_{index}", name or "", "".join(parts))
        for index, (cid, name, parts) in sorted(calls.items())
    )
