"""Roofline context of each trial: memory-bandwidth (MBU) and compute (MFU) utilisation.

Decoding one token per sequence reads every weight once per step plus each sequence's KV cache,
so its speed limit is the memory bandwidth; MBU says how close a trial came to it. MFU says how
much of the peak dense FLOP/s the output tokens used (2 FLOPs per parameter per token). Both read
only summary columns (`model.num_params_b`, `hardware.memory_bandwidth_gb_s`, ...) and hand the
comparison frame the columns `mbu`, `mfu` and `roofline_basis` (what MBU counted).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.plots import load_values, numeric_column
from sweep.core import records as rec

# Bytes per stored parameter, by dtype or quantization name as the backends spell them.
BYTES_PER_PARAM = {
    "fp32": 4.0,
    "float32": 4.0,
    "fp16": 2.0,
    "float16": 2.0,
    "half": 2.0,
    "bf16": 2.0,
    "bfloat16": 2.0,
    "fp8": 1.0,
    "fp8_e4m3": 1.0,
    "fp8_e5m2": 1.0,
    "int8": 1.0,
    "8bit": 1.0,
    "int4": 0.5,
    "4bit": 0.5,
    "nf4": 0.5,
    "awq": 0.5,
    "gptq": 0.5,
}
# `auto` loads the checkpoint's own dtype, which for today's LLMs is 16-bit.
DEFAULT_BYTES_PER_PARAM = 2.0
BASIS_WEIGHTS = "weights"
BASIS_WEIGHTS_KV = "weights+kv"
WEIGHTS_ONLY_NOTE = (
    "MBU counts the weights only: the model's layers, KV heads and head size are not in the "
    "summary, so the KV cache read per step is left out and MBU is a lower bound."
)


def bytes_per_param(dtype: object, quantization: object = None) -> float:
    """Bytes of one stored parameter: the quantization's when known, else the dtype's."""
    for name in (quantization, dtype):
        if isinstance(name, str) and name.lower() in BYTES_PER_PARAM:
            return BYTES_PER_PARAM[name.lower()]
    return DEFAULT_BYTES_PER_PARAM


def kv_bytes_per_token(layers: float, kv_heads: float, head_dim: float, nbytes: float) -> float:
    """KV-cache bytes of one token: a key and a value per layer and KV head."""
    return 2.0 * layers * kv_heads * head_dim * nbytes


def roofline(summary: pd.DataFrame) -> pd.DataFrame:
    """MBU and MFU of every trial (NaN where a needed column is missing or a trial failed).

    MBU = bytes read per decode step x decode steps per second / (bandwidth x GPUs), where a
    step reads the weights and, when the model's architecture columns are present, the KV cache
    of every sequence in flight; steps per second = 1 / median TPOT (each running sequence gains
    one token per step), else output tok/s / sequences in flight. Sequences in flight come from
    Little's law (request throughput x mean E2E latency), else the offered batch or concurrency.
    MFU = 2 x parameters x output tok/s / (peak fp16 FLOP/s x GPUs).

    Returns:
        Columns `records.MBU`, `records.MFU` and `records.ROOFLINE_BASIS`, indexed as `summary`.
    """
    params = numeric_column(summary, rec.MODEL_NUM_PARAMS_B) * 1e9
    gpus = numeric_column(summary, rec.BACKEND_NUM_GPUS).fillna(0).clip(lower=1)
    weight_bpp = pd.Series(
        [
            bytes_per_param(d, q)
            for d, q in zip(
                _raw(summary, rec.BACKEND_DTYPE),
                _raw(summary, rec.BACKEND_QUANTIZATION),
                strict=True,
            )
        ],
        index=summary.index,
    )
    in_flight = _sequences_in_flight(summary)
    kv_step = _kv_bytes_per_step(summary, in_flight)
    step_bytes = params * weight_bpp + kv_step.fillna(0.0)
    bandwidth = numeric_column(summary, rec.HARDWARE_MEMORY_BANDWIDTH) * 1e9 * gpus
    output_tok_s = numeric_column(summary, rec.OUTPUT_THROUGHPUT)
    steps_s = (1e3 / numeric_column(summary, rec.latency_column("tpot", "median"))).fillna(
        output_tok_s / in_flight
    )
    peak_flops = numeric_column(summary, rec.HARDWARE_PEAK_FP16_TFLOPS) * 1e12 * gpus
    return pd.DataFrame(
        {
            rec.MBU: _ratio(step_bytes * steps_s, bandwidth),
            rec.MFU: _ratio(2.0 * params * output_tok_s, peak_flops),
            rec.ROOFLINE_BASIS: np.where(kv_step.notna(), BASIS_WEIGHTS_KV, BASIS_WEIGHTS),
        },
        index=summary.index,
    )


def _sequences_in_flight(summary: pd.DataFrame) -> pd.Series:
    e2e_s = numeric_column(summary, rec.latency_column("e2e", "mean")) / 1e3
    little = (numeric_column(summary, rec.REQUEST_THROUGHPUT) * e2e_s).where(lambda n: n > 0)
    return little.fillna(load_values(summary)).clip(lower=1.0)


def _kv_bytes_per_step(summary: pd.DataFrame, in_flight: pd.Series) -> pd.Series:
    """KV cache read by one decode step of all sequences in flight; NaN without architecture."""
    kv_dtype = _raw(summary, rec.BACKEND_KV_CACHE_DTYPE)
    # A quantized model still keeps its KV cache in 16 bits unless the KV dtype says otherwise.
    nbytes = pd.Series(
        [
            bytes_per_param(k if k not in (None, "auto") else d)
            for k, d in zip(kv_dtype, _raw(summary, rec.BACKEND_DTYPE), strict=True)
        ],
        index=summary.index,
    )
    per_token = kv_bytes_per_token(
        numeric_column(summary, rec.MODEL_NUM_LAYERS),
        numeric_column(summary, rec.MODEL_NUM_KV_HEADS),
        numeric_column(summary, rec.MODEL_HEAD_DIM),
        nbytes,
    )
    completed = numeric_column(summary, rec.COMPLETED_REQUESTS).where(lambda n: n > 0)
    # Mid-way through decoding a sequence holds its prompt and half its output, on average.
    tokens = numeric_column(summary, rec.INPUT_TOKENS_TOTAL)
    tokens += numeric_column(summary, rec.OUTPUT_TOKENS_TOTAL) / 2
    context = tokens / completed
    return per_token * context * in_flight


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    return (numerator / denominator.where(denominator > 0)).astype(float)


def _raw(summary: pd.DataFrame, column: str) -> pd.Series:
    if column not in summary:  # a Series built from a bare None would hold NaN, not None
        return pd.Series([None] * len(summary), index=summary.index, dtype=object)
    return summary[column].astype(object).where(summary[column].notna(), None)
