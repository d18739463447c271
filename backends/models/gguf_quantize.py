"""GGUF quantization with llama.cpp's own quantizer (`llama_model_quantize` of the binding).

The project's converter (`backends.models.gguf_convert`) writes f32 or f16 files; the block
types a quantization sweep compares (Q8_0, Q4_0) are made from its f32 file by the same code
llama.cpp's `llama-quantize` tool runs, so a converted Q4_0 is the Q4_0 a user would make.
`backends.llamacpp.gguf_path` caches the result beside the unquantized conversions.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

from sweep.core.errors import BackendError

# convert_outtype -> the binding's file-type constant.
QUANT_TYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}


def quantize_gguf(llama_cpp: Any, source: Path, out_file: Path, outtype: str) -> Path:
    """Write `source` (an f32 or f16 GGUF) quantized to `outtype` as `out_file`.

    Raises:
        BackendError: llama.cpp refused (its return code in the message).
    """
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[outtype])
    code = llama_cpp.llama_model_quantize(
        str(source).encode(), str(out_file).encode(), ctypes.byref(params)
    )
    if code != 0:
        raise BackendError(f"llama.cpp could not quantize {source} to {outtype} (code {code})")
    return out_file
