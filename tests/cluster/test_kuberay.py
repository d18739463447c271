"""The KubeRay manifests: valid against KubeRay v1.7.0's own CRDs, set up as the `ray up` YAMLs.

The CRDs are vendored (tests/fixtures/kuberay-1.7.0). The API server prunes or refuses fields a
CRD's structural schema does not name, so the check is strict in the same way: every field must
be in the schema (unless it preserves unknown fields), with the right type, enum and required
fields.
"""

import copy
import functools
import gzip
from pathlib import Path

import pytest
import yaml

from sweep.driver.driver import NO_PRESTART
from sweep.driver.node_types import node_types_of
from sweep.driver.placement import unplaceable_reason
from tests.cluster.gke import gke_schedulable
from tests.cluster.start_commands import quantity

REPO = Path(__file__).parents[2]
CRDS = REPO / "tests" / "fixtures" / "kuberay-1.7.0"
CLUSTER = REPO / "scripts" / "cluster" / "kuberay-l4.yaml"
JOB = REPO / "scripts" / "cluster" / "kuberay-sweep-job.yaml"
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool,
         "integer": int, "number": (int, float)}  # fmt: skip


@functools.cache
def crd_schema(kind: str) -> dict:
    name = {"RayCluster": "rayclusters", "RayJob": "rayjobs"}[kind]
    text = gzip.decompress((CRDS / f"ray.io_{name}.yaml.gz").read_bytes())
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def problems(value, schema: dict, path: str = "") -> list[str]:
    """What the API server would refuse or drop in `value` under `schema`."""
    if path == ".metadata":  # an ObjectMeta, which the CRD leaves to the API server
        return [f"{path}.{k}: not an ObjectMeta field we use" for k in value
                if k not in ("name", "namespace", "labels", "annotations")]  # fmt: skip
    if schema.get("x-kubernetes-int-or-string"):
        return [] if isinstance(value, int | str) else [f"{path}: not an int or a string"]
    kind = schema.get("type")
    if (
        kind
        and isinstance(value, bool) != (kind == "boolean")
        or not isinstance(value, TYPES.get(kind, object))
    ):
        return [f"{path}: {type(value).__name__} where the schema wants {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    found = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key in schema.get("required", []):
            if key not in value:
                found.append(f"{path}.{key}: required")
        for key, item in value.items():
            if key in properties:
                found += problems(item, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += problems(item, extra, f"{path}.{key}")
            elif not (extra or schema.get("x-kubernetes-preserve-unknown-fields")):
                found.append(f"{path}.{key}: unknown field")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += problems(item, schema["items"], f"{path}[{i}]")
    return found


def manifest(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", [CLUSTER, JOB], ids=lambda p: p.name)
def test_the_manifests_validate_against_the_vendored_crds(path):
    document = manifest(path)
    assert document["apiVersion"] == "ray.io/v1"
    assert problems(document, crd_schema(document["kind"])) == []


def test_the_check_refuses_what_the_api_server_would():
    good = manifest(CLUSTER)
    schema = crd_schema("RayCluster")
    typo = copy.deepcopy(good)
    typo["spec"]["workerGroupSpecs"][0]["maxReplica"] = 8
    assert problems(typo, schema) == [".spec.workerGroupSpecs[0].maxReplica: unknown field"]
    wrong = copy.deepcopy(good)
    wrong["spec"]["autoscalerOptions"]["upscalingMode"] = "Eager"
    assert "is not one of" in problems(wrong, schema)[0]
    typed = copy.deepcopy(good)
    typed["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "8"
    assert problems(typed, schema) == [
        ".spec.workerGroupSpecs[0].maxReplicas: str where the schema wants integer"
    ]
    nameless = copy.deepcopy(good)
    del nameless["spec"]["workerGroupSpecs"][0]["groupName"]
    assert problems(nameless, schema) == [".spec.workerGroupSpecs[0].groupName: required"]


def test_pods_run_the_node_image_and_kuberays_own_start_command():
    """No command override (KubeRay's start runs: test_start_commands.py) and nothing to install
    before it, so KubeRay's default probes (about 630 s to fail) never race a set-up."""
    document = manifest(CLUSTER)
    assert "ray.io/overwrite-container-cmd" not in (document["metadata"].get("annotations") or {})
    spec = document["spec"]
    for group in (spec["headGroupSpec"], *spec["workerGroupSpecs"]):
        container = group["template"]["spec"]["containers"][0]
        assert "command" not in container and "args" not in container
        assert container["image"].rsplit(":", 1)[0].endswith("/llm-sweep-node")
        assert {"name": "RAY_worker_niceness", "value": "0"} in container["env"]
        for name in NO_PRESTART:
            assert {"name": f"RAY_{name}", "value": "0"} in container["env"]


@pytest.mark.parametrize("group", range(len(manifest(CLUSTER)["spec"]["workerGroupSpecs"])))
def test_each_worker_fits_the_machine_its_node_selector_names(group):
    spec = manifest(CLUSTER)["spec"]["workerGroupSpecs"][group]["template"]["spec"]
    machine = spec["nodeSelector"]["node.kubernetes.io/instance-type"]
    cpu, memory = gke_schedulable(machine)
    requests = spec["containers"][0]["resources"]["requests"]
    assert quantity(requests["cpu"]) <= cpu, (requests, cpu)
    assert quantity(requests["memory"]) <= memory, (requests, memory / 2**30)


def test_the_sizing_check_refuses_what_gke_would_leave_pending():
    cpu, memory = gke_schedulable("g2-standard-8")
    assert 7 <= cpu < 8  # GKE keeps part of a core, DaemonSets a little more
    assert 24 * 2**30 <= memory < 28 * 2**30  # the 28Gi once shipped stays Pending
    with pytest.raises(KeyError):
        gke_schedulable("g2-standard-7")


def test_the_worker_groups_are_node_types_an_l4_deployment_waits_for():
    from types import SimpleNamespace

    types = node_types_of(CLUSTER)
    assert [(t.name, t.max_workers) for t in types] == [("l4-x1", 8)]
    assert types[0].resources == {
        "accelerator_type:L4": 1, "CPU": 7.0, "GPU": 1.0,
        "piece:flash-attn": 1, "piece:arctic-inference": 1, "piece:llama-cpp-cuda": 1,
    }  # fmt: skip
    spec = manifest(CLUSTER)["spec"]
    assert spec["workerGroupSpecs"][0]["minReplicas"] == 0  # scales from zero
    assert spec["autoscalerOptions"]["version"] == "v2"  # publishes the groups to the GCS
    head = {"Alive": True, "Resources": {"CPU": 0.0}}
    local = SimpleNamespace(cluster=SimpleNamespace(address=None))
    l4 = SimpleNamespace(num_gpus=1, num_cpus=0.5, accelerator_type="L4", config=local)
    a100 = SimpleNamespace(num_gpus=1, num_cpus=0.5, accelerator_type="A100", config=local)
    assert unplaceable_reason(l4, [head], types) is None
    assert "accelerator type A100" in unplaceable_reason(a100, [head], types)


def test_the_job_runs_the_sweep_on_that_cluster():
    job = manifest(JOB)["spec"]
    assert job["clusterSelector"] == {"ray.io/cluster": manifest(CLUSTER)["metadata"]["name"]}
    assert "python -m sweep" in job["entrypoint"] and "cluster=auto" in job["entrypoint"]
