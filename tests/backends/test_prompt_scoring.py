"""Scoring through SGLang's and TGI's prompt log-probabilities (`backends.prompt_scoring`).

Neither server runs here (SGLang has no CPU build in this environment; TGI runs in docker, which
this machine has not), so a stand-in serves only what cannot run: an aiohttp server on 127.0.0.1
that answers SGLang's `POST /generate` and TGI's `GET /health`, `GET /info` and `POST /generate`
in the shapes their sources give (`meta_info.input_token_logprobs` / `input_top_logprobs`;
`details.prefill`), with the values of the tiny model's real forward pass (HF, fp32). Everything
on our side is real: the backends (TGI attached by `backend.url`, the `openai` backend naming
`server_kind=sglang`), the HTTP request, the parsing, the alignment checks. Each test keeps the
request bodies the stand-in received and checks them against the dialect's field names.
"""

import asyncio
import json
import math
import threading

import numpy as np
import pytest
import torch
from aiohttp import web

from backends.hf import HFBackend, HFBackendConfig
from backends.models.tokenizer import load_tokenizer
from backends.openai import OpenAIBackend, OpenAIBackendConfig
from backends.process.launcher import free_port
from backends.sglang_server import SGLangServerBackend
from backends.tgi import TGIBackend, TGIBackendConfig
from sweep.core.errors import BackendError

TEXT = "The river runs slowly past the old mill, and the water is low."
TOP_K = 5


@pytest.fixture(scope="module")
def forward(model_dir):
    """The text's ids and HF's full log-probability rows for them (the tiny model, fp32)."""
    ids = load_tokenizer(model_dir)(TEXT).input_ids
    with HFBackend(HFBackendConfig(dtype="fp32"), model_dir) as hf:
        with torch.inference_mode():
            logits = hf.model(torch.tensor([ids])).logits[0]
        rows = torch.log_softmax(logits.float(), dim=-1).numpy().astype(np.float64)
        expected = hf.score(ids, TOP_K)
    return ids, rows, expected


class StandIn:
    """SGLang's and TGI's routes, answered from `rows`; `edit` changes an answer before it goes."""

    def __init__(self, ids, rows, model_dir):
        self.ids, self.rows, self.model_dir = ids, rows, model_dir
        self.bodies: list[dict] = []
        self.edit = lambda kind, answer: answer
        self.loop = asyncio.new_event_loop()
        self.port = free_port()
        app = web.Application()
        app.router.add_get("/health", self.answer({}))
        app.router.add_get("/info", self.answer({"model_id": "tiny"}))
        app.router.add_get("/v1/models", self.answer({"data": []}))
        app.router.add_post("/generate", self.generate)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def answer(payload):
        async def route(request):
            return web.json_response(payload)

        return route

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    async def generate(self, request):
        body = await request.json()
        self.bodies.append(body)
        if "input_ids" in body:
            return web.json_response(self.edit("sglang", self.sglang(body)))
        return web.Response(
            text=json.dumps(self.edit("tgi", self.tgi(body))), content_type="application/json"
        )

    def _top(self, p, k):
        order = np.lexsort((np.arange(self.rows.shape[1]), -self.rows[p - 1]))[:k]
        return [[float(self.rows[p - 1, t]), int(t), None] for t in order]

    def sglang(self, body):
        """`meta_info` as SGLang's tokenizer manager writes it (text left out: no detokenize)."""
        ids, k = body["input_ids"], body["top_logprobs_num"]
        tokens = [[None, ids[0], None]] + [
            [float(self.rows[p - 1, ids[p]]), ids[p], None] for p in range(1, len(ids))
        ]
        tops = [None] + [self._top(p, k) for p in range(1, len(ids))]
        meta = {"input_token_logprobs": tokens, "input_top_logprobs": tops}
        return {"text": "x", "meta_info": meta}

    def tgi(self, body):
        """`details.prefill` as TGI's router writes it: the first logprob NaN, i.e. null."""
        ids = load_tokenizer(self.model_dir)(body["inputs"]).input_ids  # TGI adds BOS too
        prefill = [{"id": ids[0], "text": "<s>", "logprob": None}] + [
            {"id": ids[p], "text": "t", "logprob": float(self.rows[p - 1, ids[p]])}
            for p in range(1, len(ids))
        ]
        details = {"finish_reason": "length", "generated_tokens": 1, "prefill": prefill}
        return {"generated_text": "x", "details": {**details, "tokens": []}}

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()


@pytest.fixture
def stand_in(forward, model_dir):
    ids, rows, _ = forward
    server = StandIn(ids, rows, model_dir)
    yield server
    server.stop()


def sglang_attached(stand_in, model_dir):
    config = OpenAIBackendConfig(url=stand_in.url, server_kind="sglang", model="tiny")
    backend = OpenAIBackend(config, model_dir)
    backend.start()
    return backend


def test_sglang_scores_as_the_forward_pass_with_its_top_k(stand_in, forward, model_dir):
    ids, _, expected = forward
    assert SGLangServerBackend.prompt_logprobs == "sglang"  # the launched server speaks it too
    backend = sglang_attached(stand_in, model_dir)
    assert backend.scoring_unavailable is None
    got = backend.score(ids, TOP_K)
    (body,) = stand_in.bodies
    assert body["input_ids"] == ids and body["logprob_start_len"] == 0
    assert body["return_logprob"] is True and body["top_logprobs_num"] == TOP_K
    assert body["sampling_params"]["max_new_tokens"] == 1
    assert got.token_ids.tolist() == ids[1:]
    assert got.token_logprobs == pytest.approx(expected.token_logprobs, abs=1e-12)
    assert got.top_ids.tolist() == expected.top_ids.tolist()
    assert got.top_logprobs == pytest.approx(expected.top_logprobs, abs=1e-12)


def test_sglang_listing_fewer_alternatives_or_other_tokens_is_refused(stand_in, forward, model_dir):
    ids = forward[0]
    backend = sglang_attached(stand_in, model_dir)

    def fewer(kind, answer):
        tops = answer["meta_info"]["input_top_logprobs"]
        tops[3] = tops[3][:2]
        return answer

    stand_in.edit = fewer
    with pytest.raises(BackendError, match="listed 2 alternatives at position 3, fewer than"):
        backend.score(ids, TOP_K)

    def shifted(kind, answer):  # one position off: every token is its neighbour's
        tokens = answer["meta_info"]["input_token_logprobs"]
        answer["meta_info"]["input_token_logprobs"] = [tokens[0], *tokens[2:], tokens[1]]
        return answer

    stand_in.edit = shifted
    with pytest.raises(BackendError, match="at position 1, where the text has"):
        backend.score(ids, TOP_K)


def tgi_attached(stand_in, model_dir):
    backend = TGIBackend(TGIBackendConfig(url=stand_in.url), model_dir)
    backend.start()
    return backend


def test_tgi_scores_token_log_probabilities_without_a_top_k(stand_in, forward, model_dir):
    ids, _, expected = forward
    backend = tgi_attached(stand_in, model_dir)
    got = backend.score(ids, TOP_K)
    (body,) = stand_in.bodies
    assert body["parameters"]["decoder_input_details"] is True
    assert body["parameters"]["max_new_tokens"] == 1
    assert body["inputs"] == TEXT  # the text, decoded from its ids (TGI takes no ids)
    assert got.token_logprobs == pytest.approx(expected.token_logprobs, abs=1e-12)
    assert got.top_ids.shape == (len(ids) - 1, 0)  # TGI lists no alternatives for prompt tokens


def test_tgi_prefix_cached_positions_and_other_tokenizations_are_one_line(
    stand_in, forward, model_dir
):
    ids = forward[0]
    backend = tgi_attached(stand_in, model_dir)

    def cached(kind, answer):
        for token in answer["details"]["prefill"][:4]:
            token["logprob"] = math.nan  # TGI's NaN for a cached token; json writes NaN
        return answer

    stand_in.edit = cached
    with pytest.raises(BackendError) as raised:
        backend.score(ids, TOP_K)
    message = str(raised.value)
    assert "no log-probability for prompt position 1" in message and "prefix" in message
    assert "\n" not in message

    def no_bos(kind, answer):
        answer["details"]["prefill"] = answer["details"]["prefill"][1:]
        return answer

    stand_in.edit = no_bos
    with pytest.raises(BackendError, match="tokenized the text differently"):
        backend.score(ids, TOP_K)


def test_a_server_error_is_one_line_naming_the_server(stand_in, forward, model_dir):
    backend = sglang_attached(stand_in, model_dir)

    def broken(kind, answer):
        return {"error": "no such thing"}

    stand_in.edit = broken
    with pytest.raises(BackendError, match="gave no prompt log-probabilities in the sglang form"):
        backend.score(forward[0], TOP_K)


@pytest.mark.parametrize("kind", ["none", "sim", "llamacpp"])
def test_an_endpoint_that_cannot_score_says_why(kind):
    backend = OpenAIBackend(OpenAIBackendConfig(url="http://127.0.0.1:9", server_kind=kind), "m")
    reason = backend.scoring_unavailable
    assert reason and "\n" not in reason
    with pytest.raises(BackendError, match="scoring is not available: "):
        backend.score([1, 2, 3], TOP_K)
