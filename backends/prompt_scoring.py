"""Scoring a text through a server's prompt log-probabilities, in each server's own dialect.

A server backend names its dialect (`ServerBackend.prompt_logprobs`, a key of `DIALECTS`) and
`score` sends one request per text, which generates a single token and returns what the server
computed for every prompt position. Each dialect was read from its server's source:

- `vllm`: `POST /v1/completions` with the prompt as token ids and vLLM's own `prompt_logprobs: K`
  (`vllm/entrypoints/openai/completion/protocol.py`, 0.32.0). `choices[0].prompt_logprobs` is
  a list, `null` at position 0, then `{token id: {logprob, rank, decoded_token}}` holding the
  top K and the prompt's own token (with its rank, which may exceed K). vLLM caps K at its
  `--max-logprobs` (20 by default).
- `sglang`: SGLang's native `POST /generate` with `input_ids`, `return_logprob`,
  `logprob_start_len: 0` and `top_logprobs_num: K` (`GenerateReqInput`,
  `sglang/srt/managers/io_struct.py`). `meta_info.input_token_logprobs` is
  `[logprob, token id, text]` per prompt token (`null` logprob first) and
  `meta_info.input_top_logprobs` a list of K such triples per position (`null` first).
- `tgi`: TGI's `POST /generate` with `parameters.decoder_input_details: true` (`router/src/lib.rs`,
  `GenerateParameters`). `details.prefill` is `{id, text, logprob}` per prompt token, the first
  one's logprob NaN (JSON null), and so is a token TGI served from its prefix cache
  (`flash_causal_lm.py`). TGI takes text, not ids: the text is the local tokenizer's decoding,
  and the ids TGI returns are checked against the text's. Its `top_n_tokens` lists alternatives
  for generated tokens only, never prompt ones, so TGI's scores carry no top-K: perplexity and
  its ratio are computed, KL and top-1 agreement are not.

`backends.scoring.from_positions` turns the positions into `TokenScores` and refuses a server
that tokenized the text otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpx

from backends.scoring import Position, TokenScores, from_positions
from sweep.core.errors import BackendError

SCORE_TIMEOUT_S = 300.0  # one text's prefill on a busy CPU server


@dataclass(frozen=True)
class Dialect:
    """How one kind of server is asked for prompt log-probabilities and how it answers.

    Attributes:
        path: the route the request goes to.
        body: (served model, the text's ids, its text, K) -> the request's JSON body.
        positions: (the response's JSON, the text's ids) -> one `Position` per token after the
            first.
        needs_text: whether the body carries the text rather than ids (the text is decoded).
    """

    path: str
    body: Callable[[str, Sequence[int], str | None, int], dict[str, Any]]
    positions: Callable[[Any, Sequence[int]], list[Position]]
    needs_text: bool = False


def score_on_server(backend: Any, dialect: str, ids: Sequence[int], top_k: int) -> TokenScores:
    """Score one text through a started server backend in `dialect` (a key of `DIALECTS`).

    Raises:
        BackendError: the server refused the request, answered otherwise than its dialect says,
            or tokenized the text differently.
    """
    speech = DIALECTS[dialect]
    text = decoded(backend.model_path, tuple(ids)) if speech.needs_text else None
    body = speech.body(backend.served_model, ids, text, top_k)
    if speech.path.startswith("/v1/"):  # the endpoint's own extra fields go to its OpenAI routes
        body = {**backend.request_body(), **body}
    where = f"the {dialect} server at {backend.base_url}"
    try:
        response = httpx.post(
            backend.base_url + speech.path,
            json=body,
            headers=backend.request_headers(),
            timeout=SCORE_TIMEOUT_S,
            trust_env=False,  # as every other request of ours: no proxy from the environment
        )
    except httpx.HTTPError as exc:
        raise BackendError(f"{where}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if response.status_code != 200:
        detail = " ".join(response.text.split())[:300]
        raise BackendError(f"{where} answered {response.status_code} to scoring: {detail}")
    try:
        positions = speech.positions(response.json(), ids)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise BackendError(
            f"{where} gave no prompt log-probabilities in the {dialect} form "
            f"({type(exc).__name__}: {exc})"
        ) from None
    return from_positions(ids, positions, top_k, where)


@lru_cache(maxsize=4)
def _tokenizer(model_path: str) -> Any:
    from backends.models.tokenizer import load_tokenizer

    return load_tokenizer(model_path)


def decoded(model_path: str, ids: tuple[int, ...]) -> str:
    """The text of `ids` as the local tokenizer writes it, special tokens (BOS) left out."""
    return _tokenizer(model_path).decode(list(ids), skip_special_tokens=True)


def _vllm_body(model: str, ids: Sequence[int], text: str | None, k: int) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": list(ids),
        "max_tokens": 1,
        "temperature": 0.0,
        "prompt_logprobs": k,
    }


def _vllm_positions(answer: Any, ids: Sequence[int]) -> list[Position]:
    rows = answer["choices"][0]["prompt_logprobs"]
    if rows is None:
        raise ValueError("prompt_logprobs is null")
    return [_vllm_position(row, ids[p], p) for p, row in enumerate(rows) if p > 0]


def _vllm_position(row: Mapping[str, Any], token: int, p: int) -> Position:
    entries = {int(t): entry for t, entry in row.items()}
    if token not in entries:
        raise BackendError(
            f"vLLM listed no log-probability for the text's own token {token} at position {p}"
        )
    return Position(
        token_id=token,
        logprob=float(entries[token]["logprob"]),
        top={t: float(e["logprob"]) for t, e in entries.items()},
        ranks={t: int(e["rank"]) for t, e in entries.items() if e.get("rank") is not None},
    )


def _sglang_body(model: str, ids: Sequence[int], text: str | None, k: int) -> dict[str, Any]:
    return {
        "input_ids": list(ids),
        "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
        "return_logprob": True,
        "logprob_start_len": 0,
        "top_logprobs_num": k,
    }


def _sglang_positions(answer: Any, ids: Sequence[int]) -> list[Position]:
    meta = answer["meta_info"]
    tokens, tops = meta["input_token_logprobs"], meta["input_top_logprobs"]
    if len(tokens) != len(tops):
        raise ValueError(f"{len(tokens)} token log-probabilities but {len(tops)} top lists")
    return [
        Position(
            token_id=int(token[1]),
            logprob=_number(token[0], p, "SGLang"),
            top={int(t[1]): float(t[0]) for t in top or ()},
            ranks={},
        )
        for p, (token, top) in enumerate(zip(tokens, tops, strict=True))
        if p > 0
    ]


def _tgi_body(model: str, ids: Sequence[int], text: str | None, k: int) -> dict[str, Any]:
    return {
        "inputs": text,
        "parameters": {"max_new_tokens": 1, "details": True, "decoder_input_details": True},
    }


def _tgi_positions(answer: Any, ids: Sequence[int]) -> list[Position]:
    prefill = answer["details"]["prefill"]
    if not prefill or int(prefill[0]["id"]) != ids[0]:
        first = prefill[0]["id"] if prefill else "nothing"
        raise BackendError(
            f"TGI's prompt starts with token {first}, the text's with {ids[0]}: the server "
            "tokenized the text differently"
        )
    return [
        Position(int(t["id"]), _number(t["logprob"], p, "TGI"), {}, {})
        for p, t in enumerate(prefill)
        if p > 0
    ]


def _number(value: Any, p: int, server: str) -> float:
    """A prompt token's log-probability; none (or NaN) past the first is a refusal, not a 0."""
    number = math.nan if value is None else float(value)
    if math.isnan(number):
        raise BackendError(
            f"{server} gave no log-probability for prompt position {p} (a token served from "
            "its prefix cache has none): turn the server's prefix caching off to score"
        )
    return number


DIALECTS: dict[str, Dialect] = {
    "vllm": Dialect("/v1/completions", _vllm_body, _vllm_positions),
    "sglang": Dialect("/generate", _sglang_body, _sglang_positions),
    "tgi": Dialect("/generate", _tgi_body, _tgi_positions, needs_text=True),
}
