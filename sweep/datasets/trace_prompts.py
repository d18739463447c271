"""The prompts of a trace's selected rows: exact token lengths, shared prefix blocks.

Rows whose `hash_ids` start alike share those leading blocks of `dataset.block_size` tokens: a
block's tokens are drawn from the block's id and `dataset.seed`, the rest of a prompt from its
row. Tokens are whole words (one token each, starting a word), so a prompt's text re-tokenizes
to the same ids however it is cut; every prompt is re-tokenized and checked. Without a
tokenizer the pieces are words of the bundled corpus, about one a token. `sweep.datasets.trace`
selects the rows and hands on the prompts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from sweep.core.errors import DatasetError
from sweep.datasets import corpus
from sweep.datasets.prompt import Prompt

MAX_WORDS = 4096  # word tokens a prompt draws from: plenty, and found quickly in a large vocab
MAX_FITS = 4  # re-tokenizing rounds for a prompt whose template merges with its text
ENDS = 8  # word tokens at each end of a prompt that are re-tokenized with its template
SAMPLE = 2048  # word tokens a tokenizer's word-by-word cutting is checked on


def minimum_input(tokenizer: Any) -> int:
    """The shortest input a prompt can have: one token and the tokenizer's special ones."""
    return 1 if tokenizer is None else tokenizer.num_special_tokens_to_add(pair=False) + 1


def text_prompts(chosen: Any, cfg: Any) -> list[Prompt]:
    """Text of about each row's length in corpus words, without ids (the server counts)."""
    words = corpus.words_for
    pieces = _pieces(chosen, cfg, _corpus_words(), words(cfg.block_size), words)
    return [Prompt(" ".join(piece.tolist()), (), 0) for piece in pieces]


def token_prompts(chosen: Any, cfg: Any, tokenizer: Any) -> list[Prompt]:
    """Prompts of exact token lengths, checked by re-tokenizing their text.

    Where the tokenizer cuts text at every word token and decodes a run of them as their texts
    joined (`_word_split`: byte-level BPE such as GPT-2's and the tiny model's), a prompt's
    middle re-tokenizes to itself by construction: its text is its words joined, and only its two
    ends, where BOS or a chat template meets the first and last word, are re-tokenized. Any
    other tokenizer, and any prompt whose ends do not check, is re-tokenized whole.
    """
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    extra = tokenizer.num_special_tokens_to_add(pair=False)
    words = _word_tokens(tokenizer, tuple(sorted(special)))
    pieces = _pieces(chosen, cfg, words, cfg.block_size, lambda n: n - extra)
    spelled = _word_split(tokenizer, words)
    if spelled is None:
        return [_fitted(chosen, cfg, tokenizer, words, k, p.tolist()) for k, p in enumerate(pieces)]
    texts = ["".join(spelled[piece].tolist()) for piece in pieces]
    ends = [np.concatenate([p[:ENDS], p[-ENDS:]]) if len(p) > 2 * ENDS else p for p in pieces]
    end_texts = ["".join(spelled[end].tolist()) for end in ends]
    encoded = tokenizer(end_texts).input_ids if end_texts else []
    made = []
    for k, (piece, end, text, ids) in enumerate(zip(pieces, ends, texts, encoded, strict=True)):
        cut = _find(ids, end.tolist())
        if cut is None or len(ids) - len(end) + len(piece) != chosen.input_len[k]:
            made.append(_fitted(chosen, cfg, tokenizer, words, k, piece.tolist()))
            continue
        full = (*ids[:cut], *piece.tolist(), *ids[cut + len(end) :])
        made.append(Prompt(text, full, len(full)))
    return made


def _fitted(
    chosen: Any, cfg: Any, tokenizer: Any, words: np.ndarray, k: int, content: list[int]
) -> Prompt:
    """The k-th selected row's prompt, re-tokenized whole until it is exactly its length."""
    row, length = chosen.rows[k], chosen.input_len[k]
    extend = np.random.default_rng([cfg.seed, 2, row])
    text = _decode(tokenizer, [content])[0]
    ids = tokenizer(text).input_ids
    for _ in range(MAX_FITS):  # a chat template can merge with the first or last word
        if len(ids) == length and _holds(ids, content):
            break
        excess = len(ids) - length
        if excess > 0 and len(content) > excess:
            content = content[:-excess]
        elif excess < 0:
            content = content + words[extend.integers(len(words), size=-excess)].tolist()
        else:
            break
        text = tokenizer.decode(content, skip_special_tokens=False)
        ids = tokenizer(text).input_ids
    if len(ids) != length or not _holds(ids, content):
        trace = chosen.trace
        raise DatasetError(
            f"{trace.path}:{trace.lines[row]}: no prompt text re-tokenizes to exactly "
            f"{length} tokens with this tokenizer (it merges across word boundaries)"
        )
    return Prompt(text, tuple(ids), length)


def _word_split(tokenizer: Any, words: np.ndarray) -> np.ndarray | None:
    """Each word token's text, by id, where any run of them re-tokenizes word by word.

    That holds when the tokenizer has no normalizer, its pre-tokenizer cuts a run of word tokens'
    text at every word (`_word_tokens` checked that each word alone encodes to itself), and
    decoding a run gives their texts joined: checked on a sample of `SAMPLE` words. None: it
    does not hold (or the tokenizer is not a fast one), and prompts are re-tokenized whole.
    """
    if not tokenizer.is_fast:
        return None
    backend = tokenizer.backend_tokenizer
    if backend.normalizer is not None or backend.pre_tokenizer is None:
        return None
    spelled = np.full(int(words.max()) + 1, "", dtype=object)
    spelled[words] = _decode(tokenizer, [[int(t)] for t in words])
    sample = words[np.random.default_rng(0).integers(len(words), size=SAMPLE)]
    text = "".join(spelled[sample].tolist())
    if _decode(tokenizer, [sample.tolist()])[0] != text:
        return None
    starts = np.cumsum([0, *(len(spelled[t]) for t in sample)])[:-1].tolist()
    cuts = [start for _, (start, _) in backend.pre_tokenizer.pre_tokenize_str(text)]
    return spelled if cuts == starts else None


def _find(ids: list[int], content: list[int]) -> int | None:
    """Where `content` starts in `ids`, the first place it lies whole; None: nowhere."""
    n = len(content)
    for k in range(len(ids) - n + 1):
        if ids[k] == content[0] and ids[k : k + n] == content:
            return k
    return None


def _pieces(
    chosen: Any,
    cfg: Any,
    vocab: np.ndarray,
    block_len: int,
    row_len: Callable[[int], int],
) -> list[np.ndarray]:
    """Per row: its blocks' pieces (the same for the same id), then its own, cut to its length.

    The pieces are `vocab` entries (word tokens, or words without a tokenizer), drawn from
    `dataset.seed` and the block's id, or the row's index for the rest.
    """
    blocks: dict[int, np.ndarray] = {}

    def draw(key: list[int], count: int) -> np.ndarray:
        return vocab[np.random.default_rng([cfg.seed, *key]).integers(len(vocab), size=count)]

    made = []
    for row, input_len in zip(chosen.rows, chosen.input_len, strict=True):
        length = row_len(input_len)
        parts, have = [], 0
        for block in chosen.trace.hash_ids[row]:
            if have >= length:
                break
            if block not in blocks:
                blocks[block] = draw([0, block], block_len)
            parts.append(blocks[block])
            have += block_len
        if have < length:
            parts.append(draw([1, row], length - have))
        made.append(np.concatenate(parts)[:length])
    return made


def _holds(ids: list[int], content: list[int]) -> bool:
    """Whether `content` lies unchanged in `ids` (around it: special or template tokens)."""
    return _find(ids, content) is not None


@functools.cache
def _corpus_words() -> np.ndarray:
    """The distinct words of the bundled corpus, in a fixed order."""
    return np.array(sorted({w for s in corpus.corpus() for w in s.split()}))


def _word_tokens(tokenizer: Any, special: tuple[int, ...]) -> np.ndarray:
    """Ids that are one whole word each, starting it, and re-tokenize alone in any sequence."""
    excluded = set(special)
    candidates = [
        t
        for t, text in enumerate(_decode(tokenizer, [[t] for t in range(len(tokenizer))]))
        if t not in excluded and text.strip().isascii() and text.strip().isalpha()
    ][: 2 * MAX_WORDS]
    tripled = _decode(tokenizer, [[t, t, t] for t in candidates])
    again = tokenizer(tripled, add_special_tokens=False).input_ids if tripled else []
    words = [
        t
        for t, text, ids in zip(candidates, tripled, again, strict=True)
        if ids == [t, t, t] and len(text.split()) == 3
    ][:MAX_WORDS]
    if not words:
        raise DatasetError("the tokenizer has no whole-word tokens to make trace prompts from")
    return np.array(words, dtype=np.int64)


def _decode(tokenizer: Any, sequences: list[list[int]]) -> list[str]:
    """Texts of id sequences, decoded in Rust where the tokenizer is a fast one.

    Transformers' own `batch_decode` checks every id in Python: four times as long here.
    """
    if tokenizer.is_fast:
        return tokenizer.backend_tokenizer.decode_batch(sequences, skip_special_tokens=False)
    return tokenizer.batch_decode(sequences, skip_special_tokens=False)
