"""A deployment's quality scores: its backend scores the quality set once, before its trials.

With `quality=on` the worker (`sweep.worker.trial`) hands the started backend to `score_deployment`,
which reads the set (`sweep.datasets.quality_texts`), tokenizes it with the model's tokenizer and
asks the backend to score each text teacher-forced (`Backend.score`). It hands on a
`QualityFiles` for the driver to write as `<deployment_id>/quality.parquet`
(`records.QUALITY_SCHEMA`) and the status every summary row of the deployment records
(`records.QUALITY_STATUS`). A backend that cannot score, or a set that fails, is one line in that
status and in the log: the trials run all the same.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from sweep.core import records as R
from sweep.core.errors import SweepError
from sweep.core.results import QualityFiles
from sweep.datasets.quality_texts import context_of, load_text_set, token_ids

log = logging.getLogger(__name__)


def score_deployment(
    backend: Any, config: Any, tokenizer: Any, deployment_id: str
) -> tuple[QualityFiles | None, str]:
    """Score the quality set through a started backend: its table and the status line.

    Args:
        backend: the deployment's started backend.
        config: the deployment's `Config` (`quality`, `model.max_model_len`).
        tokenizer: the model's tokenizer (None where the worker has none).
        deployment_id: the deployment the scores belong to.

    Returns:
        The files to write (None when nothing was scored) and `records.QUALITY_STATUS`.
    """
    reason = backend.scoring_unavailable
    if reason is None and tokenizer is None:
        reason = "no local tokenizer (backend.tokenizer=none) to make the texts' tokens"
    if reason is not None:
        log.warning("quality: not scored on %s: %s", config.backend.name, reason)
        return None, f"not available: {reason}"
    quality = config.quality
    try:
        text_set = load_text_set(quality)
        context = context_of(tokenizer, config.model.max_model_len)
        texts = token_ids(text_set, tokenizer, context, quality.too_long)
        rows = []
        for idx, ids in enumerate(texts):
            rows.append(_rows(idx, backend.score(ids, quality.top_k)))
    except SweepError as exc:
        log.warning("quality: scoring failed on %s: %s", config.backend.name, exc)
        return None, f"failed: {str(exc).splitlines()[0]}"
    identity = {
        R.DEPLOYMENT_ID: deployment_id,
        R.QUALITY_SET_NAME: text_set.name,
        R.QUALITY_SET_SHA256: text_set.sha256,
        R.QUALITY_SET_TOKENS: sum(len(ids) for ids in texts),
    }
    columns = {name: [] for name in R.QUALITY_SCHEMA.names}
    for part in rows:
        count = len(part[R.POSITION])
        for name in R.QUALITY_SCHEMA.names:
            columns[name] += part[name] if name in part else [identity[name]] * count
    table = pa.Table.from_pydict(columns, schema=R.QUALITY_SCHEMA)
    return QualityFiles(deployment_id, table), R.QUALITY_SCORED


def _rows(idx: int, scores: Any) -> dict[str, list]:
    count = len(scores.token_ids)
    return {
        R.TEXT_IDX: [idx] * count,
        R.POSITION: list(range(1, count + 1)),
        R.TOKEN_ID: scores.token_ids.tolist(),
        R.TOKEN_LOGPROB: scores.token_logprobs.tolist(),
        R.TOP_IDS: scores.top_ids.tolist(),
        R.TOP_LOGPROBS: scores.top_logprobs.tolist(),
    }
