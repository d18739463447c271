"""MBU counts the bytes each engine really stores, per engine and quantization (issue 18).

Rows are summary rows as the worker writes them: the flattened config of each engine's
shipped option (`conf/backend/engines/*`) and its backend's recorded facts, Llama-2-7b (6.74 B
parameters) on an A100 80 GB (2039 GB/s), decoding one step every 20 ms. Expected values are
worked out by hand below.
"""

import dataclasses
import json

import pandas as pd
import pytest

from analysis.stats.roofline import (
    FORMAT_BYTES,
    FORMAT_COLUMNS,
    SPECULATIVE_BASIS,
    SPECULATIVE_COLUMNS,
    bytes_per_param,
    kv_bytes_per_value,
    roofline,
    weight_bytes_per_param,
)
from backends import REGISTRY, backend_class
from sweep.core import records as rec
from sweep.core.config import flatten

PARAMS = 6.74e9
BANDWIDTH = 2039.0
STEPS_S = 50.0  # 1 / 20 ms


def facts(backend):
    """What the worker records about `backend` (`Backend.facts`), from its default config."""
    cls = backend_class(backend)
    return cls(cls.config_class(), "model").facts()


def row(backend, **config):
    """One summary row of `backend` with `config` (flattened column names) on the A100."""
    return {
        rec.BACKEND_NAME: backend,
        **facts(backend),
        rec.MODEL_NUM_PARAMS_B: PARAMS / 1e9,
        rec.BACKEND_NUM_GPUS: 1,
        rec.HARDWARE_MEMORY_BANDWIDTH: BANDWIDTH,
        rec.HARDWARE_PEAK_FP16_TFLOPS: 312.0,
        rec.OUTPUT_THROUGHPUT: 50.0,
        rec.latency_column("tpot", "median"): 1e3 / STEPS_S,
        rec.REQUEST_THROUGHPUT: 0.25,
        rec.latency_column("e2e", "mean"): 4000.0,
        rec.COMPLETED_REQUESTS: 10,
        rec.INPUT_TOKENS_TOTAL: 1000,
        rec.OUTPUT_TOKENS_TOTAL: 2000,
        rec.WORKLOAD_BATCH_SIZE: 1,
        **config,
    }


# (row, weight bytes per parameter, KV-cache bytes per value), worked out by hand.
CASES = {
    "hf fp32": (row("hf", **{rec.BACKEND_DTYPE: "fp32"}), 4.0, 4.0),
    "hf fp16": (row("hf", **{rec.BACKEND_DTYPE: "fp16"}), 2.0, 2.0),
    # LLM.int8: one byte per weight (its per-row scales are 4 bytes per row: nothing).
    "hf 8bit": (
        row("hf", **{rec.BACKEND_DTYPE: "fp16", rec.BACKEND_QUANTIZATION: "bnb_8bit"}),
        1.0,
        2.0,
    ),
    # 4-bit (fp4) weights plus one fp32 absmax per block of 64: 0.5 + 4 / 64.
    "hf 4bit": (
        row("hf", **{rec.BACKEND_DTYPE: "fp16", rec.BACKEND_QUANTIZATION: "bnb_4bit"}),
        0.5625,
        2.0,
    ),
    # CTranslate2: int8 weights, fp16 activations (its KV cache); int8 alone computes in fp32.
    "ct2 int8_float16": (row("ctranslate2", **{"backend.compute_type": "int8_float16"}), 1.0, 2.0),
    "ct2 int8": (row("ctranslate2", **{"backend.compute_type": "int8"}), 1.0, 4.0),
    "ct2 float32": (row("ctranslate2", **{"backend.compute_type": "float32"}), 4.0, 4.0),
    # llama.cpp: Q4_0 blocks hold 32 weights in 18 bytes (4.5 bits); Q4_K_M is a mix that
    # llama.cpp's quantize README measures at 4.84 bits on Llama-2-7B; the KV cache is f16.
    "llamacpp Q4_0": (
        row("llamacpp", **{"backend.gguf_file": "llama-2-7b.Q4_0.gguf"}),
        4.5 / 8,
        2.0,
    ),
    "llamacpp Q4_K_M": (
        row("llamacpp", **{"backend.gguf_file": "llama-2-7b.Q4_K_M.gguf"}),
        4.84 / 8,
        2.0,
    ),
    "llamacpp converted f32": (row("llamacpp", **{"backend.convert_outtype": "f32"}), 4.0, 2.0),
    "llamacpp converted f16": (row("llamacpp", **{"backend.convert_outtype": "f16"}), 2.0, 2.0),
    # ExLlamaV2: the GPTQ checkpoint's 4 bits, or an EXL2 revision's bits per weight; the
    # cache in its own type.
    "exllamav2 gptq": (row("exllamav2", **{"backend.cache_type": "fp16"}), 0.5, 2.0),
    "exllamav2 exl2 q4 cache": (
        row("exllamav2", **{"backend.cache_type": "q4", "model.revision": "4.65bpw"}),
        4.65 / 8,
        0.5,
    ),
    "exllamav2 q8 cache": (row("exllamav2", **{"backend.cache_type": "q8"}), 0.5, 1.0),
    "vllm auto": (row("vllm", **{rec.BACKEND_DTYPE: "auto"}), 2.0, 2.0),
    "vllm gptq": (
        row("vllm", **{rec.BACKEND_DTYPE: "auto", rec.BACKEND_QUANTIZATION: "gptq"}),
        0.5,
        2.0,
    ),
    "vllm_server fp8 kv": (
        row("vllm_server", **{rec.BACKEND_DTYPE: "auto", rec.BACKEND_KV_CACHE_DTYPE: "fp8"}),
        2.0,
        1.0,
    ),
}


def frame(cases):
    return pd.DataFrame([case[0] for case in cases])


def test_bytes_per_engine_and_quantization():
    summary = frame(CASES.values())
    weights = weight_bytes_per_param(summary)
    kv = kv_bytes_per_value(summary)
    for i, (name, (_, weight, kv_value)) in enumerate(CASES.items()):
        assert weights[i] == pytest.approx(weight), name
        assert kv[i] == pytest.approx(kv_value), name
    assert (
        bytes_per_param("fp16", "bnb_8bit") == 1.0 and bytes_per_param("fp16", "bnb_4bit") == 0.5625
    )


def test_mbu_of_quantized_engines_on_known_numbers():
    names = ["hf fp16", "hf 8bit", "hf 4bit", "llamacpp Q4_0", "ct2 int8_float16", "exllamav2 gptq"]
    out = roofline(frame([CASES[n] for n in names]))
    # Weights only (no architecture columns): 6.74e9 x bytes x 50 steps/s / 2039e9 B/s.
    fp16 = PARAMS * 2 * STEPS_S / (BANDWIDTH * 1e9)
    assert out[rec.MBU][0] == pytest.approx(fp16)  # 0.3306
    assert out[rec.MBU][1] == pytest.approx(fp16 / 2)  # 8-bit: it read 2x too high
    assert out[rec.MBU][2] == pytest.approx(fp16 * 0.5625 / 2)  # 4-bit: 0.0930, not 0.3306
    assert out[rec.MBU][3] == pytest.approx(PARAMS * 0.5625 * STEPS_S / (BANDWIDTH * 1e9))
    assert out[rec.MBU][4] == pytest.approx(fp16 / 2)
    assert out[rec.MBU][5] == pytest.approx(fp16 / 4)


def test_kv_term_uses_the_engine_cache_type():
    arch = {rec.MODEL_NUM_LAYERS: 32, rec.MODEL_NUM_KV_HEADS: 32, rec.MODEL_HEAD_DIM: 128}
    fp16_cache, q4_cache = CASES["exllamav2 gptq"][0], CASES["exllamav2 exl2 q4 cache"][0]
    out = roofline(pd.DataFrame([{**fp16_cache, **arch}, {**q4_cache, **arch}]))
    # Context per sequence: 1000 / 10 + 2000 / 10 / 2 = 200 tokens; 0.25 req/s x 4 s = 1 in
    # flight. KV values per token: 2 x 32 layers x 32 heads x 128.
    values = 2 * 32 * 32 * 128 * 200
    weights_gptq, weights_exl2 = PARAMS * 0.5, PARAMS * 4.65 / 8
    assert out[rec.MBU][0] == pytest.approx((weights_gptq + values * 2.0) * 50 / 2039e9)
    assert out[rec.MBU][1] == pytest.approx((weights_exl2 + values * 0.5) * 50 / 2039e9)


def test_speculative_decoding_marks_mbu_as_an_upper_bound():
    spec = json.dumps({"method": "suffix", "num_speculative_tokens": 16}, sort_keys=True)
    server = CASES["vllm_server fp8 kv"][0]
    engine = CASES["vllm auto"][0]
    rows = [
        {**server, "backend.speculative_config": spec},
        {**server, "backend.speculative_config": None},
        {
            **engine,
            "backend.engine_kwargs": json.dumps({"speculative_config": {"method": "ngram"}}),
        },
        {**engine, "backend.engine_kwargs": "{}"},
    ]
    basis = roofline(pd.DataFrame(rows))[rec.ROOFLINE_BASIS].tolist()
    assert [SPECULATIVE_BASIS in b for b in basis] == [True, False, True, False]


def test_every_backend_records_columns_the_roofline_reads_and_its_config_has():
    # Analysis imports no backend: a backend names its format and its config fields that say
    # what it stores; each must be a column the worker writes for it and one its format's reader
    # reads, so a renamed field, or a field no reader knows, fails here.
    for name in REGISTRY:
        cls = backend_class(name)
        assert cls.weight_format in FORMAT_BYTES, name
        written = flatten({"backend": {f.name: None for f in dataclasses.fields(cls.config_class)}})
        columns = [f"backend.{field}" for field in cls.roofline_fields]
        missing = [c for c in columns if c not in written]
        assert missing == [], f"{name}: {missing}"
        unread = set(columns) - {*FORMAT_COLUMNS[cls.weight_format], *SPECULATIVE_COLUMNS}
        assert unread == set(), f"{name}: {unread}"


def test_a_row_reads_only_the_columns_its_backend_recorded():
    # A GGUF server's row carries a `backend.dtype` from another backend's config in a mixed
    # frame: not one of its columns, so its bytes are the GGUF file's.
    gguf = {
        **row("llamacpp_server", **{"backend.gguf_file": "m.Q8_0.gguf"}),
        rec.BACKEND_DTYPE: "fp32",
    }
    assert weight_bytes_per_param(pd.DataFrame([gguf]))[0] == pytest.approx(8.5 / 8)


def test_a_folder_older_than_the_facts_reads_declared_names():
    old = {k: v for k, v in CASES["vllm gptq"][0].items() if k not in rec.BACKEND_FACTS}
    ct2 = {k: v for k, v in CASES["ct2 int8"][0].items() if k not in rec.BACKEND_FACTS}
    weights = weight_bytes_per_param(pd.DataFrame([old, ct2])).tolist()
    assert weights == [0.5, 2.0]  # gptq as declared; a compute type is no declared name: 16-bit
