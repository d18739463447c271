"""A sweep's trials in the field's formats: `python -m analysis DIR --export FORMAT`.

`registry` names the formats and writes their files (one per trial, under
`<results>/export/<format>/`); `trial` is one trial as every format reads it (its summary row
and the requests its summary counts); one module per format: `llmd` (llm-d-benchmark's
benchmark report, schema 0.2) and `vllm_json` (the JSON `vllm bench serve --save-result
--save-detailed` writes).
"""
