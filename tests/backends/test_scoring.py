"""Teacher-forced scoring (`Backend.score`) on the tiny model: HF, CTranslate2 and llama.cpp.

Each backend's scores are checked against its own greedy generation: the token it generates
after a prefix must be the first of its top-K at the next position. An off-by-one between the
rows of a forward pass and the prompt's positions fails that (and the cross-backend check: the
three engines, fp32 all, give the same log-probabilities at the same positions).
"""

import numpy as np
import pytest
from transformers import AutoTokenizer

from backends.base import GenRequest
from backends.ctranslate2 import CTranslate2Backend, CTranslate2BackendConfig
from backends.hf import HFBackend, HFBackendConfig
from backends.llamacpp import LlamaCppBackend, LlamaCppBackendConfig
from backends.scoring import from_logprobs, log_softmax
from backends.sim import SimBackend, SimBackendConfig
from sweep.core.errors import BackendError

pytestmark = pytest.mark.usefixtures("cache_dir")  # conversions go to a test cache

TEXT = "The river runs slowly past the old mill, and the water is low."


def test_row_i_scores_the_token_after_it():
    # Three tokens over a vocabulary of 4: row 0 predicts ids[1], row 1 ids[2], row 2 nothing.
    rows = log_softmax(np.array([[0.0, 1.0, 1.0, 3.0], [2.0, 0.0, 0.0, 0.0], [9.0, 0, 0, 0]]))
    scores = from_logprobs([0, 3, 1], rows, top_k=2)
    assert scores.token_ids.tolist() == [3, 1]
    assert scores.token_logprobs == pytest.approx([rows[0, 3], rows[1, 1]])
    assert scores.top_ids.tolist() == [[3, 1], [0, 1]]  # a tie goes to the lower id
    assert scores.top_logprobs[:, 0] == pytest.approx([rows[0, 3], rows[1, 0]])


def test_rows_that_do_not_match_the_ids_are_refused():
    with pytest.raises(ValueError, match="rows for 3 tokens"):
        from_logprobs([0, 1, 2], np.zeros((2, 4)), top_k=2)


ENGINES = {
    "hf": lambda m: HFBackend(HFBackendConfig(), m),
    "ctranslate2": lambda m: CTranslate2Backend(CTranslate2BackendConfig(), m),
    "llamacpp": lambda m: LlamaCppBackend(LlamaCppBackendConfig(convert_outtype="f32"), m),
}


@pytest.fixture(scope="module")
def ids(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)(TEXT).input_ids


@pytest.fixture(scope="module")
def scored(model_dir, ids, tmp_path_factory):
    """Each engine's scores of TEXT, and its greedy next token after several prefixes."""
    import os

    pytest.importorskip("ctranslate2", reason="needs the ctranslate2 extra")
    pytest.importorskip("llama_cpp", reason="needs the llamacpp extra")
    before = os.environ.get("SWEEP_CACHE_DIR")
    os.environ["SWEEP_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "engine-cache")
    try:
        found = {}
        for name, make in ENGINES.items():
            with make(model_dir) as backend:
                scores = backend.score(ids, top_k=5)
                greedy = {}
                for prefix in (1, 2, 5, len(ids) - 1):
                    request = GenRequest(0, "", tuple(ids[:prefix]), max_tokens=1)
                    tokens = []
                    _capture(backend, request, tokens)
                    greedy[prefix] = tokens[0]
                found[name] = (scores, greedy)
        return found
    finally:
        if before is None:
            os.environ.pop("SWEEP_CACHE_DIR")
        else:
            os.environ["SWEEP_CACHE_DIR"] = before


def _capture(backend, request, tokens):
    """The token a backend's engine generates greedily after the prompt."""
    if isinstance(backend, HFBackend):
        import torch

        with torch.inference_mode():
            out = backend.model.generate(
                input_ids=torch.tensor([list(request.prompt_token_ids)]),
                max_new_tokens=1,
                do_sample=False,
                pad_token_id=backend.pad_id,
            )
        tokens.append(int(out[0, -1]))
    elif isinstance(backend, CTranslate2Backend):
        result = backend.generator.generate_batch(
            [[backend.vocabulary[i] for i in request.prompt_token_ids]],
            max_length=1,
            sampling_topk=1,
            include_prompt_in_result=False,
            end_token=[],
        )
        tokens.append(int(result[0].sequences_ids[0][0]))
    else:
        backend.llm.reset()
        for token in backend.llm.generate(list(request.prompt_token_ids), top_k=1, temp=0.0):
            tokens.append(int(token))
            break


@pytest.mark.parametrize("engine", list(ENGINES))
def test_the_top_token_at_a_position_is_what_the_engine_generates_there(scored, engine):
    scores, greedy = scored[engine]
    for prefix, token in greedy.items():
        # Position `prefix` (row prefix - 1) is the token after the first `prefix` tokens.
        assert scores.top_ids[prefix - 1, 0] == token, (engine, prefix)


def test_engines_give_the_same_log_probabilities_at_the_same_positions(scored, ids):
    hf = scored["hf"][0]
    assert hf.token_ids.tolist() == ids[1:]
    for engine in ("ctranslate2", "llamacpp"):
        other = scored[engine][0]
        assert other.token_ids.tolist() == ids[1:]
        assert np.abs(other.token_logprobs - hf.token_logprobs).max() < 1e-3, engine
        assert (other.top_ids[:, 0] == hf.top_ids[:, 0]).all(), engine
        # one position off would compare each distribution with its neighbour's: far apart
        assert np.abs(other.token_logprobs[1:] - hf.token_logprobs[:-1]).max() > 1e-2


def test_the_gguf_vocabulary_tokenizes_as_the_model_does(model_dir, ids):
    pytest.importorskip("llama_cpp", reason="needs the llamacpp extra")
    with ENGINES["llamacpp"](model_dir) as backend:
        assert backend.llm.tokenize(TEXT.encode(), add_bos=True, special=False) == ids


def test_a_backend_that_cannot_score_says_why():
    backend = SimBackend(SimBackendConfig(), "sim-model")  # not started: the reason is static
    assert "no model" in backend.scoring_unavailable
    with pytest.raises(BackendError, match="scoring is not available: the sim server has no"):
        backend.score([1, 2, 3], top_k=2)
