"""llama.cpp asked for a GPU with no layer on it is refused in one line, at config time."""

import pytest

from backends.llamacpp import LlamaCppBackendConfig
from backends.llamacpp_server import LlamaCppServerConfig
from sweep.core.errors import ConfigError


@pytest.mark.parametrize("config_class", [LlamaCppBackendConfig, LlamaCppServerConfig])
def test_a_gpu_task_with_no_gpu_layers_is_refused(config_class):
    with pytest.raises(ConfigError) as info:
        config_class(num_gpus=1, n_gpu_layers=0)
    message = str(info.value)
    assert "\n" not in message
    assert "backend.num_gpus=1 with backend.n_gpu_layers=0" in message
    assert "runs llama.cpp on the CPU" in message


@pytest.mark.parametrize("config_class", [LlamaCppBackendConfig, LlamaCppServerConfig])
@pytest.mark.parametrize(("num_gpus", "layers"), [(1, -1), (1, 20), (0, 0), (0, -1)])
def test_gpu_layers_with_a_gpu_or_none_without_are_accepted(config_class, num_gpus, layers):
    config = config_class(num_gpus=num_gpus, n_gpu_layers=layers)
    assert (config.num_gpus, config.n_gpu_layers) == (num_gpus, layers)
