"""A tiny, deterministic Llama model that the project builds itself, with no model hub.

This module holds the recipe: a byte-level BPE tokenizer trained on a built-in English
corpus, and a two-layer ``LlamaForCausalLM`` with random weights from seed 0. It hands on
one cached directory that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load offline, and that serving backends accept (head_dim
is 64, as vLLM's CPU attention needs). Two builds give byte-identical weights and tokenizer.

Usage:
    python -m backends.models.tiny [CACHE_DIR]   # builds if needed, prints the model path
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import threading

from backends.models.cache import build_lock

logger = logging.getLogger(__name__)

TINY_MODEL_VERSION = "tiny-llama-v1"
"""Name of the model directory; change it whenever the recipe changes."""

VOCAB_SIZE = 512
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_BUILD_LOCK = threading.Lock()  # builds seed torch's global RNG: one at a time per process

# Word lists for the built-in corpus, "|"-separated to keep them compact.
_SUBJECTS = (
    "The old farmer|A young engineer|My sister|The tired driver|Our teacher|A curious child|"
    "The quiet librarian|His neighbour|The new doctor|Every student|The small dog|"
    "A brave sailor|Their manager|The city council|An honest baker"
).split("|")
_VERBS = (
    "carried|painted|repaired|found|watched|cleaned|described|opened|ordered|measured|"
    "followed|borrowed|tested|explained|remembered|delivered|counted"
).split("|")
_OBJECTS = (
    "a heavy box|the red bicycle|two wooden chairs|an old map|the kitchen window|a long letter|"
    "the broken clock|three green apples|the garden gate|a strange noise|the morning train|"
    "a warm coat|the final report"
).split("|")
_PLACES = (
    "near the river|in the market|at the station|behind the school|on the hill|"
    "inside the museum|by the harbour|across the bridge|under the tree|in the library|"
    "at the airport"
).split("|")
_TIMES = (
    "yesterday|this morning|last winter|after lunch|on Monday|before sunrise|at 7 o'clock|"
    "in 2019|every weekend"
).split("|")
_ADJECTIVES = "bright|cold|busy|calm|noisy|empty|beautiful|dark|friendly|expensive".split("|")


def corpus(size: int = 480) -> list[str]:
    """Generate the built-in English training corpus.

    Sentences come from the word lists by index arithmetic (no RNG), so the corpus is
    varied yet identical on every run, Python version and platform.

    Args:
        size: Number of sentences to generate.

    Returns:
        The sentences, in a fixed order.
    """
    sentences = []
    for i in range(size):
        subj = _SUBJECTS[i % len(_SUBJECTS)]
        verb = _VERBS[(7 * i) % len(_VERBS)]
        obj = _OBJECTS[(5 * i + 1) % len(_OBJECTS)]
        place = _PLACES[(3 * i + 2) % len(_PLACES)]
        when = _TIMES[(11 * i) % len(_TIMES)]
        adj = _ADJECTIVES[(13 * i + 3) % len(_ADJECTIVES)]
        templates = (
            f"{subj} {verb} {obj} {place} {when}.",
            f"{when.capitalize()}, {subj.lower()} {verb} {obj}.",
            f"Why has {subj.lower()} {verb} {obj} {place}?",
            f"The day was {adj}, so {subj.lower()} {verb} {obj}!",
            f'"It is {adj} {place}," said {subj.lower()}.',
            f"{subj} {verb} {i % 12 + 2} things; one was {obj}.",
        )
        sentences.append(templates[i % len(templates)])
    return sentences


def train_tokenizer(
    sentences: list[str],
    vocab_size: int = VOCAB_SIZE,
    chat_template: str | None = CHAT_TEMPLATE,
    model_max_length: int = 4096,
):
    """Train a byte-level BPE tokenizer on `sentences` and wrap it for ``transformers``.

    The tiny model's recipe (`corpus()`, `VOCAB_SIZE`, its chat template); the tests train
    another on other words, so that a second generated model counts text otherwise.

    Returns:
        A ``PreTrainedTokenizerFast`` that prepends ``<s>`` on encode.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sentences, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=chat_template,
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
    )


def write_llama(
    out_dir: pathlib.Path,
    tokenizer,
    layers: int = 2,
    intermediate_size: int = 256,
    max_positions: int = 4096,
    seed: int = 0,
) -> None:
    """Write `tokenizer` and a random-weight Llama for it into ``out_dir``.

    128 wide, 2 heads of 64 (vLLM's CPU attention needs head_dim 64), 1 KV head, float32;
    the tiny model's defaults.

    Args:
        out_dir: An existing, empty directory.
        tokenizer: What `train_tokenizer` returns.
        layers: Decoder layers.
        intermediate_size: The MLP's width.
        max_positions: The context (`max_position_embeddings`).
        seed: torch's seed for the weights.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    # Embed the chat template in tokenizer_config.json and name a class that
    # transformers 4.x knows too (5.x writes "TokenizersBackend"), for vLLM & co.
    tokenizer.save_pretrained(out_dir, save_jinja_files=False)
    config_path = out_dir / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8"))
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(tok_config, indent=2, sort_keys=True) + "\n", "utf-8")
    ids = {f"{n}_token_id": getattr(tokenizer, f"{n}_token_id") for n in ("bos", "eos", "pad")}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        dtype="float32",
        **ids,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(out_dir, safe_serialization=True)
    for path in out_dir.iterdir():
        path.chmod(0o644)  # some files are written owner-only; the cache may be shared


def _build(out_dir: pathlib.Path) -> None:
    """Write the tiny model's tokenizer, model and generation config into ``out_dir``."""
    write_llama(out_dir, train_tokenizer(corpus()))


def _is_complete(path: pathlib.Path) -> bool:
    """Tell whether ``path`` holds every file of a finished build."""
    return all((path / name).is_file() for name in _REQUIRED_FILES)


def default_cache_dir() -> pathlib.Path:
    """Return ``$SWEEP_CACHE_DIR/models``, or ``~/.cache/llm-sweep/models`` if unset."""
    root = os.environ.get("SWEEP_CACHE_DIR")
    if root:
        return pathlib.Path(root) / "models"
    return pathlib.Path.home() / ".cache" / "llm-sweep" / "models"


def ensure_tiny_model(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Return the directory of the tiny model, building it on first use.

    The build goes into a temporary sibling directory that is renamed into place
    in one step, so concurrent builders never expose a half-written directory.
    Builders in other processes (a node's deployments starting at once) wait for the
    first one's build and use it (`build_lock`); within a process, one build at a time.

    Args:
        cache_dir: Directory that holds model directories; defaults to
            :func:`default_cache_dir`.

    Returns:
        ``cache_dir / TINY_MODEL_VERSION``, ready for ``from_pretrained``.
    """
    parent = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = parent / TINY_MODEL_VERSION
    if _is_complete(dest):
        return dest
    parent.mkdir(parents=True, exist_ok=True)
    with _BUILD_LOCK, build_lock(parent, TINY_MODEL_VERSION):
        if dest.exists():  # check in this order: a directory renamed into place is complete
            if _is_complete(dest):
                return dest
            logger.warning("removing incomplete model directory %s", dest)
            shutil.rmtree(dest, ignore_errors=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{TINY_MODEL_VERSION}.", dir=parent))
        tmp.chmod(0o755)  # mkdtemp makes it owner-only
        try:
            logger.info("building tiny model %s in %s", TINY_MODEL_VERSION, dest)
            _build(tmp)
            try:
                os.rename(tmp, dest)
            except OSError:
                if not _is_complete(dest):
                    raise
                logger.info("another process built %s first; using it", dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def main(argv: list[str] | None = None) -> None:
    """Build the tiny model (if needed) and print its path.

    Args:
        argv: Optional cache directory as the single argument; defaults to
            ``sys.argv[1:]``.
    """
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(ensure_tiny_model(args[0] if args else None))


if __name__ == "__main__":
    main()
