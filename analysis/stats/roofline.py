"""Roofline context of each trial: memory-bandwidth (MBU) and compute (MFU) utilisation.

Decoding one token per sequence reads every weight once per step plus each sequence's KV cache,
so its speed limit is the memory bandwidth; MBU says how close a trial came to it. The bytes are
those each engine stores, read as its recorded weight format says (`FORMAT_BYTES`: dtype names
and bitsandbytes, CTranslate2's compute type, the GGUF file's type, GPTQ or EXL2 bits and
ExLlamaV2's cache type) from the config columns its backend recorded as naming them
(`records.BACKEND_ROOFLINE_COLUMNS`); no backend is known by name. A trial of a results folder
written before backends recorded these facts is read as declared dtype and quantization names
from whichever of those columns it has, else as 16-bit. MFU says how much of the peak dense
FLOP/s the output tokens used (2 FLOPs per parameter per token). Both read only summary columns
(`model.num_params_b`, `hardware.memory_bandwidth_gb_s`, ...) and hand the comparison frame the
columns `mbu`, `mfu` and `roofline_basis` (what MBU counted).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

import numpy as np
import pandas as pd

from analysis.read.columns import load_values, numeric_column
from sweep.core import records as rec

# Bytes per stored parameter, by dtype or quantization name as the backends spell them. Group-
# quantized 4-bit checkpoints (GPTQ, AWQ) keep a 16-bit scale and a 4-bit zero per 128 weights
# besides: about 4% more, left out. Unquantized embeddings and output head count as quantized.
BYTES_PER_PARAM = {
    "fp32": 4.0,
    "float32": 4.0,
    "f32": 4.0,
    "fp16": 2.0,
    "float16": 2.0,
    "f16": 2.0,
    "half": 2.0,
    "bf16": 2.0,
    "bfloat16": 2.0,
    "int16": 2.0,
    "fp8": 1.0,
    "fp8_e4m3": 1.0,
    "fp8_e5m2": 1.0,
    "int8": 1.0,
    "8bit": 1.0,
    "int8_float32": 1.0,  # CTranslate2: int8 weights, activations in the second type
    "int8_float16": 1.0,
    "int8_bfloat16": 1.0,
    "bnb_8bit": 1.0,  # LLM.int8: int8 weights and a float32 scale per row (noise)
    "bnb_4bit": 0.5625,  # 4-bit weights and a float32 absmax per block of 64: 0.5 + 4 / 64
    "int4": 0.5,
    "4bit": 0.5,
    "nf4": 0.5,
    "awq": 0.5,
    "gptq": 0.5,
}
# `auto` loads the checkpoint's own dtype, which for today's LLMs is 16-bit.
DEFAULT_BYTES_PER_PARAM = 2.0
# CTranslate2 keeps its KV cache in the compute type's activation type (float32 for int8 alone).
CT2_ACTIVATION_BYTES = {
    "float32": 4.0,
    "int8": 4.0,
    "int8_float32": 4.0,
    "int16": 4.0,
    "float16": 2.0,
    "int8_float16": 2.0,
    "bfloat16": 2.0,
    "int8_bfloat16": 2.0,
}
# GGUF weight types by the tag in the file's name (`llama-2-7b.Q4_0.gguf`), in bits per weight:
# a block type's own rate, its scales included (Q4_0: 32 weights in 18 bytes); for the k-quant
# mixes, the rate llama.cpp's quantize README measures on Llama-2-7B.
GGUF_BITS_PER_WEIGHT = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.5625,
    "Q5_1": 6.0,
    "Q5_0": 5.5,
    "Q5_K_M": 5.68,
    "Q5_K_S": 5.52,
    "Q4_1": 5.0,
    "Q4_0": 4.5,
    "Q4_K_M": 4.84,
    "Q4_K_S": 4.58,
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "Q3_K_S": 3.50,
    "Q2_K": 3.35,
}
GGUF_TAG = re.compile(
    r"(?<![A-Z0-9])("
    + "|".join(sorted(GGUF_BITS_PER_WEIGHT, key=len, reverse=True))
    + r")(?![A-Z0-9])",
    re.IGNORECASE,
)
LLAMACPP_KV_BYTES = 2.0  # llama.cpp's default K and V cache type is f16
# ExLlamaV2: an EXL2 checkpoint's bits per weight, by the convention of naming its revision or
# folder `4.65bpw`; without one, a GPTQ checkpoint's 4 bits (the shipped option's).
BPW = re.compile(r"(\d+(?:\.\d+)?)\s*bpw", re.IGNORECASE)
EXLLAMAV2_DEFAULT_BYTES = 0.5
EXLLAMAV2_CACHE_BYTES = {"fp16": 2.0, "q8": 1.0, "q6": 0.75, "q4": 0.5}

# Config columns where engines record what they store (the field names of their configs).
COMPUTE_TYPE = "backend.compute_type"
GGUF_FILE = "backend.gguf_file"
CONVERT_OUTTYPE = "backend.convert_outtype"
CACHE_TYPE = "backend.cache_type"
SPECULATIVE_CONFIG = "backend.speculative_config"
ENGINE_KWARGS = "backend.engine_kwargs"
MODEL_PATH = "model.path"
MODEL_REVISION = "model.revision"
# The config columns each weight format's reader reads (the model's path and revision aside),
# and those that say a trial decoded speculatively; a backend records which of them it has.
FORMAT_COLUMNS = {
    rec.WEIGHTS_DECLARED: (rec.BACKEND_DTYPE, rec.BACKEND_QUANTIZATION, rec.BACKEND_KV_CACHE_DTYPE),
    rec.WEIGHTS_CTRANSLATE2: (COMPUTE_TYPE,),
    rec.WEIGHTS_GGUF: (GGUF_FILE, CONVERT_OUTTYPE),
    rec.WEIGHTS_EXL2: (CACHE_TYPE,),
}
SPECULATIVE_COLUMNS = (SPECULATIVE_CONFIG, ENGINE_KWARGS)

BASIS_WEIGHTS = "weights"
BASIS_WEIGHTS_KV = "weights+kv"
SPECULATIVE_BASIS = "speculative: upper bound"
WEIGHTS_ONLY_NOTE = (
    "MBU counts the weights only: the model's layers, KV heads and head size are not in the "
    "summary, so the KV cache read per step is left out and MBU is a lower bound."
)

Row = Mapping[str, object]
T = TypeVar("T")


def bytes_per_param(dtype: object, quantization: object = None) -> float:
    """Bytes of one stored parameter: the quantization's when known, else the dtype's."""
    for name in (quantization, dtype):
        if isinstance(name, str) and name.lower() in BYTES_PER_PARAM:
            return BYTES_PER_PARAM[name.lower()]
    return DEFAULT_BYTES_PER_PARAM


def weight_bytes_per_param(summary: pd.DataFrame) -> pd.Series:
    """Bytes each trial's engine stores per weight (`FORMAT_BYTES`)."""
    return pd.Series([b[0] for b in _per_row(summary, _engine_bytes)], index=summary.index)


def kv_bytes_per_value(summary: pd.DataFrame) -> pd.Series:
    """Bytes each trial's engine stores per KV-cache value (a key or value element)."""
    return pd.Series([b[1] for b in _per_row(summary, _engine_bytes)], index=summary.index)


def _declared(row: Row) -> tuple[float, float]:
    """Engines that name their dtype and quantization (transformers, vLLM, ...)."""
    dtype, kv = row.get(rec.BACKEND_DTYPE), row.get(rec.BACKEND_KV_CACHE_DTYPE)
    # A quantized model still keeps its KV cache in 16 bits unless the KV dtype says otherwise.
    kv_bytes = bytes_per_param(kv if kv not in (None, "auto") else dtype)
    return bytes_per_param(dtype, row.get(rec.BACKEND_QUANTIZATION)), kv_bytes


def _ctranslate2(row: Row) -> tuple[float, float]:
    compute = row.get(COMPUTE_TYPE)
    weights = bytes_per_param(compute)
    return weights, CT2_ACTIVATION_BYTES.get(str(compute), DEFAULT_BYTES_PER_PARAM)


def _llamacpp(row: Row) -> tuple[float, float]:
    gguf = row.get(GGUF_FILE)
    path = row.get(MODEL_PATH)
    if gguf is None and isinstance(path, str) and path.endswith(".gguf"):
        gguf = path
    if gguf is None:  # converted from the HF model by our converter, in convert_outtype
        outtype = str(row.get(CONVERT_OUTTYPE)).upper()
        if outtype in GGUF_BITS_PER_WEIGHT:  # a block type llama.cpp quantized it to (Q4_0)
            return GGUF_BITS_PER_WEIGHT[outtype] / 8, LLAMACPP_KV_BYTES
        return bytes_per_param(row.get(CONVERT_OUTTYPE)), LLAMACPP_KV_BYTES
    tag = GGUF_TAG.search(str(gguf).rsplit("/", 1)[-1])
    bits = GGUF_BITS_PER_WEIGHT[tag.group(1).upper()] if tag else 8 * DEFAULT_BYTES_PER_PARAM
    return bits / 8, LLAMACPP_KV_BYTES


def _exllamav2(row: Row) -> tuple[float, float]:
    found = [BPW.search(str(row.get(c) or "")) for c in (MODEL_REVISION, MODEL_PATH)]
    bits = next((float(m.group(1)) for m in found if m), None)
    weights = bits / 8 if bits else EXLLAMAV2_DEFAULT_BYTES
    return weights, EXLLAMAV2_CACHE_BYTES.get(str(row.get(CACHE_TYPE)), DEFAULT_BYTES_PER_PARAM)


# (weight bytes per parameter, KV-cache bytes per value) of a trial, by its recorded format.
FORMAT_BYTES: dict[str, Callable[[Row], tuple[float, float]]] = {
    rec.WEIGHTS_DECLARED: _declared,
    rec.WEIGHTS_CTRANSLATE2: _ctranslate2,
    rec.WEIGHTS_GGUF: _llamacpp,
    rec.WEIGHTS_EXL2: _exllamav2,
}


def _engine_bytes(row: Row) -> tuple[float, float]:
    return FORMAT_BYTES.get(str(row.get(rec.BACKEND_WEIGHT_FORMAT)), _declared)(row)


def _rows(summary: pd.DataFrame) -> tuple[list[dict[str, object]], list[int]]:
    """The distinct rows of the columns the byte tables read, and each trial's among them.

    A trial's row holds its format, model path and revision, and the config columns its backend
    recorded as naming what it stores (`records.BACKEND_ROOFLINE_COLUMNS`), None for the others.
    Without that record (a folder older than the backend facts) the declared format's columns
    and the speculative ones are read where present. A sweep of 10,000 trials has a few
    distinct rows, so each is built (and judged, `_per_row`) once.
    """
    named = {c for columns in FORMAT_COLUMNS.values() for c in columns} | set(SPECULATIVE_COLUMNS)
    fixed = (rec.BACKEND_WEIGHT_FORMAT, MODEL_PATH, MODEL_REVISION)
    raw = {c: _raw(summary, c).tolist() for c in sorted(named | set(fixed))}
    recorded = _raw(summary, rec.BACKEND_ROOFLINE_COLUMNS).tolist()
    fallback = {*FORMAT_COLUMNS[rec.WEIGHTS_DECLARED], *SPECULATIVE_COLUMNS}
    rows: list[dict[str, object]] = []
    seen: dict[tuple, int] = {}
    positions = []
    for key in zip(recorded, *raw.values(), strict=True):
        try:
            position = seen.setdefault(key, len(rows))
        except TypeError:  # a list or dict value: this row on its own
            position = len(rows)
        if position == len(rows):
            listed = _json(key[0])
            own = set(listed) if isinstance(listed, list) else fallback
            values = zip(raw, key[1:], strict=True)
            rows.append({c: v if c in own or c in fixed else None for c, v in values})
        positions.append(position)
    return rows, positions


def _per_row(summary: pd.DataFrame, judge: Callable[[Row], T]) -> list[T]:
    """`judge` of each trial's row (`_rows`), worked out once per distinct row."""
    rows, positions = _rows(summary)
    judged = [judge(row) for row in rows]
    return [judged[i] for i in positions]


def _speculative(summary: pd.DataFrame) -> pd.Series:
    """Trials that decoded speculatively (a server's speculative_config or the engine's)."""
    return pd.Series(_per_row(summary, _decodes_speculatively), index=summary.index, dtype=bool)


def _decodes_speculatively(row: Row) -> bool:
    engine = _json(row[ENGINE_KWARGS])
    nested = engine.get("speculative_config") if isinstance(engine, dict) else None
    return _json(row[SPECULATIVE_CONFIG]) is not None or nested is not None


def _json(value: object) -> object:
    """A flattened dict column's value (JSON text), parsed; None for null or unreadable."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return None


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
    Bytes per weight and per KV value are the engine's (`FORMAT_BYTES`). With speculative
    decoding a step verifies several drafted tokens and a sequence gains 1 + the accepted ones,
    so 1 / TPOT counts more steps than ran: MBU is an upper bound there, and its basis says so.
    MFU = 2 x parameters x output tok/s / (peak fp16 FLOP/s x GPUs).

    Returns:
        Columns `records.MBU`, `records.MFU` and `records.ROOFLINE_BASIS`, indexed as `summary`.
    """
    params = numeric_column(summary, rec.MODEL_NUM_PARAMS_B) * 1e9
    gpus = numeric_column(summary, rec.BACKEND_NUM_GPUS).fillna(0).clip(lower=1)
    in_flight = _sequences_in_flight(summary)
    kv_step = _kv_bytes_per_step(summary, in_flight)
    step_bytes = params * weight_bytes_per_param(summary) + kv_step.fillna(0.0)
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
            rec.ROOFLINE_BASIS: _basis(kv_step.notna(), _speculative(summary)),
        },
        index=summary.index,
    )


def _basis(with_kv: pd.Series, speculative: pd.Series) -> pd.Series:
    """What MBU counted: `weights` or `weights+kv`, and whether it is a speculative bound."""
    basis = pd.Series(np.where(with_kv, BASIS_WEIGHTS_KV, BASIS_WEIGHTS), index=with_kv.index)
    return basis.where(~speculative, basis + ", " + SPECULATIVE_BASIS)


def _sequences_in_flight(summary: pd.DataFrame) -> pd.Series:
    e2e_s = numeric_column(summary, rec.latency_column("e2e", "mean")) / 1e3
    little = (numeric_column(summary, rec.REQUEST_THROUGHPUT) * e2e_s).where(lambda n: n > 0)
    return little.fillna(load_values(summary)).clip(lower=1.0)


def _kv_bytes_per_step(summary: pd.DataFrame, in_flight: pd.Series) -> pd.Series:
    """KV cache read by one decode step of all sequences in flight; NaN without architecture."""
    per_token = kv_bytes_per_token(
        numeric_column(summary, rec.MODEL_NUM_LAYERS),
        numeric_column(summary, rec.MODEL_NUM_KV_HEADS),
        numeric_column(summary, rec.MODEL_HEAD_DIM),
        kv_bytes_per_value(summary),
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
