"""The issue's acceptance run: `+experiment=quickstart_engines` on CPU compares every CPU engine.

hf, vllm (CPU build), ctranslate2 and llama.cpp on the tiny model with the same prompts, end to
end through local Ray; an engine whose extra is not installed is left out of the grid.
"""

import importlib.util

import pandas as pd
import pytest

from sweep.core import records as R
from tests.helpers import sweep_in_process

EXTRAS = {
    "hf": "transformers",
    "vllm": "vllm",
    "ctranslate2": "ctranslate2",
    "llamacpp": "llama_cpp",
}
ENGINES = [name for name, module in EXTRAS.items() if importlib.util.find_spec(module)]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quickstart_engines_compares_every_cpu_engine(tmp_path, ray_cluster):
    grid = f"sweep.grid.backend=[{','.join(ENGINES)}]"
    result = sweep_in_process(
        "+experiment=quickstart_engines", grid, f"output.dir={tmp_path}",
        f"cluster.address={ray_cluster}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "quickstart_engines"
    summary = pd.concat(pd.read_parquet(p) for p in root.glob(f"*/*/{R.SUMMARY_FILE}"))
    assert len(summary) == 2 * len(ENGINES)
    assert set(summary[R.TRIAL_STATUS]) == {R.STATUS_OK}, summary[R.ERROR_MESSAGE].dropna().tolist()
    assert set(summary[R.BACKEND_NAME]) == set(ENGINES)
    requests = pd.concat(pd.read_parquet(p) for p in root.glob(f"*/*/{R.REQUESTS_FILE}"))
    assert set(requests[R.OUTPUT_TOKENS]) == {16}  # exact lengths from every engine
    assert (requests[R.TTFT_S] > 0).all()
    # every engine saw the same prompts
    prompts = requests.groupby(R.TRIAL_ID)[R.INPUT_TOKENS].apply(lambda s: tuple(sorted(s)))
    assert prompts.nunique() == 1
    comparison = (root / "report.md").read_text().split("## Against the baseline")[1]
    for engine in ENGINES:
        assert f"| {engine} |" in comparison
