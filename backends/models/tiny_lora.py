"""LoRA adapters for the tiny model, made by the project itself: no hub, no training, no `peft`.

An adapter is a directory in PEFT's saved format, the one vLLM and SGLang load:
`adapter_config.json` (`peft_type: LORA`, `r`, `lora_alpha`, `target_modules`, ...) and
`adapter_model.safetensors`, whose tensors are named
`base_model.model.<module path>.lora_A.weight` (rank x in-features) and `...lora_B.weight`
(out-features x rank), as PEFT's `get_peft_model_state_dict` saves them (adapter name removed).
Weights are random from a seed, both A and B non-zero, so an adapter changes the model's
output (PEFT's own initialisation leaves B at zero, which a server could skip unnoticed).

A config names a generated adapter by a path of the form
`generated[:rank=R][:targets=q_proj+v_proj][:seed=S]` (`GeneratedSpec.parse`); `ensure_tiny_lora`
builds it once into the model cache, next to the tiny model, and returns its directory.

Usage:
    python -m backends.models.tiny_lora [SPEC]   # builds if needed, prints the adapter path
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import tempfile
from dataclasses import dataclass

from backends.models import tiny
from sweep.core.errors import ConfigError

TINY_LORA_VERSION = "tiny-lora-v1"
GENERATED = "generated"
# The tiny Llama's linear layers (`backends.models.tiny`): in and out features of each.
MODULE_SHAPES = {
    "q_proj": ("self_attn", 128, 128),
    "k_proj": ("self_attn", 128, 64),
    "v_proj": ("self_attn", 128, 64),
    "o_proj": ("self_attn", 128, 128),
    "gate_proj": ("mlp", 128, 256),
    "up_proj": ("mlp", 128, 256),
    "down_proj": ("mlp", 256, 128),
}
NUM_LAYERS = 2
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class GeneratedSpec:
    """A generated adapter: its rank, the modules it adapts and the seed of its weights."""

    rank: int = 8
    targets: tuple[str, ...] = DEFAULT_TARGETS
    seed: int = 0

    @classmethod
    def parse(cls, text: str, default_seed: int = 0) -> GeneratedSpec:
        """`generated[:rank=R][:targets=a+b][:seed=S]` -> spec; the seed defaults to `default_seed`.

        Raises:
            ConfigError: one line naming the part that is not understood.
        """
        head, *parts = text.split(":")
        if head != GENERATED:
            raise ConfigError(f"{text!r} is not a generated adapter (`{GENERATED}[:rank=R]...`)")
        values: dict[str, str] = {}
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep or key not in ("rank", "targets", "seed"):
                raise ConfigError(
                    f"generated adapter {text!r}: {part!r} is not rank=R, targets=a+b or seed=S"
                )
            values[key] = value
        targets = tuple(values.get("targets", "+".join(DEFAULT_TARGETS)).split("+"))
        unknown = [t for t in targets if t not in MODULE_SHAPES]
        if unknown:
            raise ConfigError(
                f"generated adapter {text!r}: unknown target module {unknown[0]!r}; choose from "
                f"{', '.join(MODULE_SHAPES)}"
            )
        try:
            spec = cls(int(values.get("rank", 8)), targets, int(values.get("seed", default_seed)))
        except ValueError:
            raise ConfigError(f"generated adapter {text!r}: rank and seed are integers") from None
        if spec.rank <= 0:
            raise ConfigError(f"generated adapter {text!r}: rank must be > 0")
        return spec

    @property
    def dirname(self) -> str:
        """The adapter's directory name in the cache: one per spec."""
        return f"{TINY_LORA_VERSION}-r{self.rank}-{'+'.join(self.targets)}-s{self.seed}"


def is_generated(path: str) -> bool:
    """Whether an adapter path names a generated adapter rather than a directory."""
    return path == GENERATED or path.startswith(GENERATED + ":")


def ensure_tiny_lora(
    spec: GeneratedSpec, cache_dir: str | os.PathLike | None = None
) -> pathlib.Path:
    """The directory of the adapter `spec` for the tiny model, built on first use.

    Built in a temporary sibling and renamed into place, as the tiny model is, so concurrent
    builders never expose a half-written adapter.
    """
    parent = pathlib.Path(cache_dir) if cache_dir is not None else tiny.default_cache_dir()
    dest = parent / spec.dirname
    if all((dest / name).is_file() for name in _FILES):
        return dest
    parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{spec.dirname}.", dir=parent))
    tmp.chmod(0o755)
    try:
        _write(tmp, spec)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not all((dest / name).is_file() for name in _FILES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _write(out_dir: pathlib.Path, spec: GeneratedSpec) -> None:
    """Write `adapter_config.json` and `adapter_model.safetensors` for `spec` into `out_dir`."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(spec.seed)
    tensors = {}
    for layer in range(NUM_LAYERS):
        for target in spec.targets:
            block, fan_in, fan_out = MODULE_SHAPES[target]
            name = f"base_model.model.model.layers.{layer}.{block}.{target}"
            a = torch.randn(spec.rank, fan_in, generator=generator) / fan_in**0.5
            b = torch.randn(fan_out, spec.rank, generator=generator) / spec.rank**0.5
            tensors[f"{name}.lora_A.weight"] = a.contiguous()
            tensors[f"{name}.lora_B.weight"] = b.contiguous()
    save_file(tensors, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": tiny.TINY_MODEL_VERSION,
        "r": spec.rank,
        "lora_alpha": spec.rank,  # scaling alpha / r = 1
        "lora_dropout": 0.0,
        "target_modules": list(spec.targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
    for path in out_dir.iterdir():
        path.chmod(0o644)


def main(argv: list[str] | None = None) -> None:
    """Build the adapter named by the single argument (default `generated`) and print its path."""
    args = sys.argv[1:] if argv is None else argv
    print(ensure_tiny_lora(GeneratedSpec.parse(args[0] if args else GENERATED)))


if __name__ == "__main__":
    main()
