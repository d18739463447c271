"""Chat prompts with images (`dataset=images`): random-token text and images the project makes.

Each prompt's text is made as `random` makes it (exactly `input_len` tokens, chat template
included); its user message then carries its images as OpenAI `image_url` content parts
(`sweep.loadgen.http.image_content`), each a `data:image/png;base64,...` URI. An image is seeded
noise of its configured size, different for every image of the trial, so a server's cache of
processed images never answers for one. How many images a prompt carries is fixed
(`images_per_request`) or drawn from the seed in [`min_images_per_request`,
`images_per_request`]. Images are encoded with Pillow (a dependency of matplotlib). The images'
tokens are counted by the server alone: `input_tokens` is the text's, `server_input_tokens` the
server's `usage.prompt_tokens`.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from typing import Any

import numpy as np

from sweep.core.config import RandomDatasetConfig
from sweep.datasets import random_tokens
from sweep.datasets.prompt import Prompt

MIME = {"png": "image/png", "jpeg": "image/jpeg"}
SEED_OFFSET = 104729  # image draws apart from the text's


def generate(cfg: Any, tokenizer: Any, num: int) -> list[Prompt]:
    """`num` prompts of `cfg.input_len` text tokens, each with its images (ImagesDatasetConfig)."""
    text = RandomDatasetConfig(input_len=cfg.input_len, seed=cfg.seed)
    prompts = random_tokens.generate(text, tokenizer, num)
    rng = np.random.default_rng(cfg.seed + SEED_OFFSET)
    counts = image_counts(cfg, num, rng)
    made, index = [], 0
    for prompt, count in zip(prompts, counts, strict=True):
        images = []
        for _ in range(count):
            width, height = cfg.image_sizes[index % len(cfg.image_sizes)]
            images.append(data_uri(noise_image(int(width), int(height), rng), cfg.image_format))
            index += 1
        made.append(dataclasses.replace(prompt, images=tuple(images)))
    return made


def image_counts(cfg: Any, num: int, rng: np.random.Generator) -> list[int]:
    """How many images each of `num` prompts carries."""
    low = cfg.min_images_per_request
    if low is None or low == cfg.images_per_request:
        return [cfg.images_per_request] * num
    return [int(n) for n in rng.integers(low, cfg.images_per_request + 1, size=num)]


def noise_image(width: int, height: int, rng: np.random.Generator) -> Any:
    """A `width` x `height` RGB image of seeded noise (a PIL image)."""
    from PIL import Image

    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def data_uri(image: Any, fmt: str) -> str:
    """`image` encoded as `fmt` in a base64 data URI."""
    out = io.BytesIO()
    image.save(out, format=fmt.upper())
    return f"data:{MIME[fmt]};base64,{base64.b64encode(out.getvalue()).decode()}"
