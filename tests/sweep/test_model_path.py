"""`model.path` given on top of the default (generated) model is what loads, and what is recorded.

The default model group generates the tiny model; a path set over it used to be ignored while the
results carried the user's path (issue 66). These tests set only `model.path`, as a user does.
"""

import pytest

from backends.models.architecture import parameter_count
from backends.models.source import resolve_model_path
from backends.models.tiny import ensure_tiny_model
from sweep.core import records as R
from sweep.core.config import ModelConfig
from sweep.core.errors import ConfigError
from tests.helpers import deployment_of, run_sweep_here
from tests.other_model import build_other_model


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    return build_other_model(tmp_path_factory.mktemp("models") / "my-llama")


def test_a_path_over_a_generated_model_replaces_it():
    mine = ModelConfig(name="tiny_llama", path="/models/my-llama/", generator="tiny_llama")
    assert (mine.generator, mine.name, mine.path) == (None, "my-llama", "/models/my-llama/")
    named = ModelConfig(name="llama3", path="org/Llama-3-8B", generator="tiny_llama")
    assert (named.generator, named.name) == (None, "llama3")  # a name the user gave is kept
    generated = ModelConfig(name="tiny_llama", path="generated", generator="tiny_llama")
    assert (generated.generator, generated.name) == ("tiny_llama", "tiny_llama")


def test_generated_without_a_generator_is_one_clear_line():
    model = ModelConfig(name="x", path="generated")  # a grid may set the path after this
    with pytest.raises(ConfigError, match=r"^model.path=generated needs model.generator"):
        resolve_model_path(model)


def test_the_plan_takes_the_path_given_on_top_of_the_default(other):
    model = deployment_of([f"model.path={other}"]).config.model
    assert (model.path, model.generator, model.name) == (str(other), None, "my-llama")
    assert model.num_params_b is None  # read from its files, not the tiny model's figure


def test_hf_loads_the_path_given_on_top_of_the_default(tmp_path, other):
    from transformers import AutoTokenizer

    collected = []
    overrides = [
        "backend=hf",
        f"model.path={other}",
        "workload.num_requests=4",
        "workload.output_len=4",
        "dataset.input_len=16",
    ]
    run_sweep_here(tmp_path, overrides, collected)
    (files,) = collected
    row = files.summary.to_pylist()[0]
    assert row[R.TRIAL_STATUS] == R.STATUS_OK, row.get(R.ERROR_MESSAGE)
    assert (row[R.MODEL_RESOLVED_PATH], row[R.MODEL_NAME]) == (str(other), "my-llama")
    params = parameter_count(str(other))
    assert params != parameter_count(str(ensure_tiny_model()))  # 3 layers against 2
    assert row[R.MODEL_NUM_PARAMS_B] * 1e9 == pytest.approx(params)
    vocab = len(AutoTokenizer.from_pretrained(str(other)))
    assert row[R.MODEL_TOKENIZER] == f"PreTrainedTokenizerFast ({vocab} tokens)"
    assert (files.requests.to_pandas()[R.INPUT_TOKENS] == 16).all()
