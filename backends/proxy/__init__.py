"""Study D's proxy: an HTTP layer between the load generator and an OpenAI-compatible server.

`proxy=clip` enforces input and output limits; `proxy=semantic_cache` also answers prompts close
to an earlier one from a cache. The pure parts are `clip` (the limits), `embedder` (prompt
vectors), `cache` (the entries and their lookup) and `stream` (recording and replaying an
answer); `server` is the aiohttp process (`python -m backends.proxy.server`); `launch` starts
one in front of a started server backend for the trials that ask for it, and refuses at plan
time a proxy in front of anything else. The configs are `sweep.core.config`'s proxy classes.
"""
