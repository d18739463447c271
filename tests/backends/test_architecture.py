"""Architecture facts read from a model's own files, without loading it."""

import json
import shutil

from backends.models.architecture import architecture
from sweep.core import records as R


def test_the_tiny_model_shape_and_exact_parameter_count(model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    facts = architecture(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert facts == {
        R.MODEL_NUM_LAYERS: 2.0,
        R.MODEL_NUM_KV_HEADS: 1.0,
        R.MODEL_HEAD_DIM: 64.0,
        R.MODEL_NUM_PARAMS_B: sum(p.numel() for p in model.parameters()) / 1e9,
    }


def test_a_quantized_checkpoint_gives_no_parameter_count(model_dir, tmp_path):
    # Packed integer tensors undercount the weights (8x for 4-bit GPTQ): only the config can say.
    quantized = tmp_path / "gptq"
    shutil.copytree(model_dir, quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (quantized / "config.json").write_text(json.dumps(config))
    facts = architecture(str(quantized))
    assert R.MODEL_NUM_PARAMS_B not in facts
    assert facts[R.MODEL_NUM_LAYERS] == 2.0


def test_without_files_there_is_nothing_to_record(tmp_path):
    assert architecture(str(tmp_path)) == {}
    assert architecture("org/not-in-the-local-cache") == {}
