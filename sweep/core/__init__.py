"""The foundation: record names and schemas, result I/O, errors, secrets, configs, the summary.

Everything in the project may import it; it imports nothing of the project outside itself
(an import-linter contract in pyproject.toml keeps it so).
"""
