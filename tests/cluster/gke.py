"""What a pod can request on a GKE node of a machine type: the allocatable CPU and memory.

GKE reserves part of each node for the kubelet and the OS ("Standard cluster architecture:
node allocatable resources" in GKE's docs): of CPU, 6% of the first core, 1% of the next, 0.5%
of the next two, 0.25% of the rest; of memory, 25% of the first 4 GiB, 20% of the next 4, 10% of
the next 8, 6% of the next 112 and 2% of the rest, plus 100 MiB for eviction. GKE's own
DaemonSets on a GPU node (logging, metrics, kube-proxy, the device plugin) request more: an
allowance of half a core and 1.5 GiB is kept for them here.
"""

from __future__ import annotations

GIB = 2**30
# The machine types the shipped manifests select: (vCPUs, memory in GiB), from GCE's table.
MACHINES = {"g2-standard-8": (8, 32), "g2-standard-12": (12, 48), "g2-standard-48": (48, 192)}
DAEMONSETS = (0.5, 1.5 * GIB)


def _tiered(total: float, tiers: list[tuple[float, float]]) -> float:
    kept, left = 0.0, total
    for size, share in tiers:
        part = min(left, size)
        kept += part * share
        left -= part
    return kept


def gke_schedulable(machine: str) -> tuple[float, float]:
    """CPUs and bytes of memory a pod may request on one node of `machine` (KeyError if unknown)."""
    cpus, memory_gib = MACHINES[machine]
    cpu_kept = _tiered(cpus, [(1, 0.06), (1, 0.01), (2, 0.005), (float("inf"), 0.0025)])
    memory = memory_gib * GIB
    memory_kept = _tiered(memory, [(4 * GIB, 0.25), (4 * GIB, 0.20), (8 * GIB, 0.10),
                                   (112 * GIB, 0.06), (float("inf"), 0.02)])  # fmt: skip
    memory_kept += 100 * 2**20
    return cpus - cpu_kept - DAEMONSETS[0], memory - memory_kept - DAEMONSETS[1]
