"""A second generated model for the tests: another tokenizer and another size than the tiny one.

`build_other_model(folder)` trains a byte-level BPE of a few hundred tokens on words the tiny
model's corpus never uses (minerals, weather, instruments), so the same prompt text counts
otherwise under each, and writes a random-weight Llama of 3 layers beside it (the tiny model
has 2): what a user's own `model.path` looks like to the sweep, with no hub. Shapes vLLM's CPU
attention takes (head_dim 64).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

VOCAB_SIZE = 300
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
_WORDS = (
    "quartz basalt granite obsidian feldspar mica garnet topaz jasper onyx "
    "drizzle monsoon sleet hail squall gale typhoon fog frost thaw "
    "oboe cello tuba harp lute sitar banjo fiddle zither kazoo"
).split()


def sentences(count: int = 400) -> list[str]:
    """A deterministic corpus of the other words, three to nine a sentence."""
    cycle = itertools.cycle(_WORDS)
    return [
        " ".join(next(cycle) for _ in range(3 + i % 7)).capitalize() + "." for i in range(count)
    ]


def build_other_model(folder: Path) -> Path:
    """Write the tokenizer and model into `folder` (made if absent) and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sentences(), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )
    tokenizer.save_pretrained(folder, save_jinja_files=False)
    config_path = folder / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8"))
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"  # a class vLLM's transformers knows
    config_path.write_text(json.dumps(tok_config, indent=2), encoding="utf-8")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder
