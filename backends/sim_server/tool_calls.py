"""The sim server's tool calls: which requests call a tool, the call's arguments, their pieces.

A chat request that offers `tools` calls one when its `tool_choice` is `required` or names a
function, and with `auto` (or none given) in `tool_call_rate` of replies (drawn from the server's
seeded generator); `none` never calls. The call's function is the named one, else one drawn from
the offered ones; its arguments are a JSON object valid against the function's `parameters`
(`arguments`: each property's first allowed value, as a model kept to the schema by a grammar
would write). A call is `TOKEN_CHARS` characters a token: its length is its arguments' over that,
at most the request's output cap, and a call cut by the cap streams its arguments cut (not JSON),
as a real server's does. The server streams them as OpenAI does: the first delta names the call's
id and function, every delta carries a piece of the arguments under the call's index.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

TOKEN_CHARS = 4  # of a call's arguments, one token


@dataclass(frozen=True)
class SimCall:
    """The one call a reply makes: its id, function, arguments' text, and whether it was named."""

    id: str
    name: str
    arguments: str
    named: bool

    def tokens(self, cap: int) -> int:
        """Its length in tokens under the output cap `cap`."""
        return max(1, min(cap, -(-len(self.arguments) // TOKEN_CHARS)))

    def delta(self, start: int, end: int) -> str:
        """The `tool_calls` delta of tokens [start, end), as JSON text."""
        piece = self.arguments[start * TOKEN_CHARS : end * TOKEN_CHARS]
        function: dict[str, Any] = {"arguments": piece}
        call: dict[str, Any] = {"index": 0, "function": function}
        if start == 0:
            call = {"index": 0, "id": self.id, "type": "function", "function": function}
            function["name"] = self.name
        return json.dumps([call], separators=(",", ":"))

    def finish(self, length: int) -> str:
        """The finish reason of a reply `length` tokens long: OpenAI's, as vLLM sends it."""
        if length < -(-len(self.arguments) // TOKEN_CHARS):
            return "length"
        return "stop" if self.named else "tool_calls"


def pick_call(body: dict, rid: str, rate: float, rng: random.Random) -> SimCall | None:
    """The call a chat request's reply makes, or None (see the module's docstring)."""
    tools = [t.get("function") for t in body.get("tools") or [] if isinstance(t, dict)]
    tools = [f for f in tools if isinstance(f, dict) and isinstance(f.get("name"), str)]
    if not tools:
        return None
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        return None
    named = isinstance(choice, dict)
    if named:
        name = (choice.get("function") or {}).get("name")
        chosen = next((f for f in tools if f["name"] == name), None)
        if chosen is None:
            return None
    elif choice == "required" or (rate > 0 and rng.random() < rate):
        chosen = rng.choice(tools)
    else:
        return None
    text = json.dumps(arguments(chosen.get("parameters") or {}), separators=(",", ":"))
    return SimCall(f"call_{rid}", chosen["name"], text, named)


def arguments(schema: Any) -> Any:
    """A value valid against the simple JSON Schema `schema`: its first allowed one."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    if kind == "object" or "properties" in schema:
        return {k: arguments(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [arguments(schema.get("items"))] * int(schema.get("minItems", 0))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = low + 1 if "exclusiveMinimum" in schema and "minimum" not in schema else low
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "sim" + "x" * max(0, int(schema.get("minLength", 0)) - 3)
