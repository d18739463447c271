"""A stand-in for the `ray` command: Ray's own option parser for `ray start`, and nothing started.

`tests/cluster/start_commands.py` puts it first on PATH when it runs a node's start command. For
`ray start ARGS` it parses ARGS with Ray's own click command (`ray.scripts.scripts.start`),
reads `--resources` as `ray start` does (JSON), merges the autoscaler's override
(RAY_OVERRIDE_RESOURCES) as Ray's resource spec does, and appends what the node would start with
to the JSON-lines file named by RAY_STAND_IN_LOG. `ray stop` does nothing. A refused option
exits as `ray start` would: click's message and exit status 2; bad `--resources` JSON, status 1.
"""

from __future__ import annotations

import json
import os
import sys


def start(args: list[str]) -> int:
    import click
    from ray._private.resource_and_label_spec import ResourceAndLabelSpec
    from ray.scripts.scripts import start as ray_start

    try:
        context = ray_start.make_context("ray start", list(args))
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    params = context.params
    try:
        resources = json.loads(params.get("resources") or "{}")
        if not isinstance(resources, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        print(f"`--resources={params.get('resources')}` is not a valid JSON string: {exc}")
        return 1
    cpus, gpus, _, _, merged = ResourceAndLabelSpec._merge_resources(
        ResourceAndLabelSpec._load_env_resources(), resources
    )
    merged["CPU"] = float(cpus if cpus is not None else params.get("num_cpus") or 0)
    merged["GPU"] = float(gpus if gpus is not None else params.get("num_gpus") or 0)
    started = {
        "head": bool(params.get("head")),
        "address": params.get("address"),
        "block": bool(params.get("block")),
        "resources": {key: float(value) for key, value in merged.items()},
    }
    with open(os.environ["RAY_STAND_IN_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(started) + "\n")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["stop"]:
        return 0
    if argv[:1] == ["start"]:
        return start(argv[1:])
    print(f"ray stand-in: only `ray start` and `ray stop`, not {argv[:1]}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
