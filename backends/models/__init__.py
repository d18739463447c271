"""Model utilities the backends and the datasets share: what a backend loads, and facts about it.

`source` turns a model config into a loadable path (generating the project's own model);
`tiny` builds that tiny Llama model; `tokenizer` loads a model's tokenizer without importing
torch where it is not needed; `architecture` reads a model's shape from its files; `cache` holds
converted models and small cached entries on disk; `gguf_convert` writes llama.cpp's GGUF file.
"""
