"""A GPTQ-format 4-bit copy of the tiny model, made locally for the GPU tests (no hub needed).

The weights are rounded to the nearest 4-bit level per group (not the GPTQ algorithm: the tests
need the checkpoint format, not its accuracy) and packed as AutoGPTQ packs them: `qweight`
holds eight 4-bit values per int32 along the input dimension, `qzeros` eight zero points per
int32 along the output dimension, stored minus one (GPTQ's v1 format), `scales` in fp16.
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

BITS, PACK = 4, 8  # 4-bit values, eight per int32
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_gptq_model(src: Path, dst: Path, group_size: int = 128) -> Path:
    """Write `src` (an HF Llama directory) to `dst` with its layer matrices in GPTQ format."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, dst / path.name)
    tensors = {}
    for name, weight in load_file(src / "model.safetensors").items():
        prefix = name.removesuffix(".weight")
        if name.endswith(".weight") and prefix.rsplit(".", 1)[-1] in LINEARS:
            tensors.update(
                {f"{prefix}.{k}": v for k, v in quantize(weight.float(), group_size).items()}
            )
        else:
            tensors[name] = weight.to(torch.float16)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((src / "config.json").read_text())
    config["dtype"] = config["torch_dtype"] = "float16"
    config["quantization_config"] = {
        "quant_method": "gptq",
        "bits": BITS,
        "group_size": group_size,
        "desc_act": False,
        "sym": True,
        "checkpoint_format": "gptq",
    }
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


def quantize(weight: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """Symmetric round-to-nearest 4-bit of an [out, in] matrix, packed as GPTQ stores it."""
    out_features, in_features = weight.shape
    groups = weight.t().reshape(in_features // group_size, group_size, out_features)
    scales = (groups.abs().amax(dim=1) / 7).clamp(min=1e-8)  # [groups, out]
    zero = 2 ** (BITS - 1)
    levels = (torch.round(groups / scales[:, None, :]) + zero).clamp(0, 2**BITS - 1)
    levels = levels.reshape(in_features, out_features).to(torch.int64)
    qweight = torch.zeros(in_features // PACK, out_features, dtype=torch.int64)
    for k in range(PACK):
        qweight |= levels[k::PACK] << (BITS * k)
    zeros = torch.full((in_features // group_size, out_features // PACK), 0, dtype=torch.int64)
    for k in range(PACK):
        zeros |= (zero - 1) << (BITS * k)  # v1 format stores zero - 1
    return {
        "qweight": _as_int32(qweight),
        "qzeros": _as_int32(zeros),
        "scales": scales.to(torch.float16),
        "g_idx": (torch.arange(in_features) // group_size).to(torch.int32),
    }


def dequantize(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The [out, in] matrix a GPTQ kernel computes with: scale x (level - (stored zero + 1))."""
    qweight = tensors["qweight"].to(torch.int64) & 0xFFFFFFFF
    qzeros = tensors["qzeros"].to(torch.int64) & 0xFFFFFFFF
    mask = 2**BITS - 1
    levels = torch.stack([(qweight >> (BITS * k)) & mask for k in range(PACK)], dim=1)
    levels = levels.reshape(-1, qweight.shape[1])  # [in, out]
    zeros = torch.stack([(qzeros >> (BITS * k)) & mask for k in range(PACK)], dim=2)
    zeros = zeros.reshape(qzeros.shape[0], -1) + 1  # [groups, out]
    g_idx = tensors["g_idx"].long()
    scales = tensors["scales"].float()
    return ((levels - zeros[g_idx]) * scales[g_idx]).t()


def _as_int32(values: torch.Tensor) -> torch.Tensor:
    """Reinterpret unsigned 32-bit patterns as the int32 tensors the format stores."""
    return torch.where(values >= 2**31, values - 2**32, values).to(torch.int32)
