"""CPU energy from RAPL through Linux's powercap files: a telemetry source of cumulative joules.

A CPU trial's worker samples `rapl_source()` beside its other telemetry; each zone's rows are
`(rapl:<zone>, records.ENERGY_COUNTER_J, joules since the source was made)`, and
`sweep.core.energy` takes their difference over the measured window.

Zones counted: each package (`intel-rapl:N`, AMD's Zen packages too) and its `dram` subzone
(memory sits outside the package's count on servers). Left out so that nothing counts twice:
`psys` (the whole platform, packages included), the `core` and `uncore` subzones (inside the
package) and `intel-rapl-mmio:*` (a package again, through another interface). A package counts
everything on it: the engine, the load generator and whatever else the node runs.

Each counter wraps at its zone's `max_energy_range_uj`; consecutive readings are unwrapped
(one wrap between two readings at most: a package of 250 W needs over 15 minutes to wrap its
usual 262 kJ range). Since 2020 most kernels let only root read `energy_uj` (CVE-2020-8694):
without a readable zone the trial's energy is not measured.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from sweep.core import records as R
from sweep.measure.telemetry import Source, at_start

log = logging.getLogger(__name__)

POWERCAP_ROOT = Path("/sys/class/powercap")
PACKAGE_ZONE = re.compile(r"intel-rapl:\d+")
SUBZONE = re.compile(r"intel-rapl:\d+:\d+")
COUNTED_SUBZONES = ("dram",)
SOURCE_PREFIX = "rapl:"
# RAPL counters are cheap to read (a file per zone); as often as the GPUs' NVML readings.
RAPL_INTERVAL_S = 0.1


@dataclasses.dataclass
class Zone:
    """One counted RAPL zone: its source name, its counter file and where the counter wraps."""

    name: str
    energy_file: Path
    max_uj: int
    last_uj: int = 0
    total_uj: int = 0


def rapl_zones(root: Path = POWERCAP_ROOT) -> list[Zone]:
    """The counted zones under `root` whose counter can be read, each with its first reading."""
    zones = []
    packages = (p for p in Path(root).glob("intel-rapl:*") if PACKAGE_ZONE.fullmatch(p.name))
    for path in sorted(packages):
        package = _text(path / "name") or path.name
        if package == "psys":
            continue
        zones.append(_zone(path, package))
        for sub in sorted(p for p in path.glob("intel-rapl:*") if SUBZONE.fullmatch(p.name)):
            name = _text(sub / "name")
            if name in COUNTED_SUBZONES:
                zones.append(_zone(sub, f"{package}/{name}"))
    return [zone for zone in zones if zone is not None]


def rapl_source(root: Path = POWERCAP_ROOT) -> Source | None:
    """Cumulative joules of each counted RAPL zone under `root`, or None where none is readable.

    Args:
        root: the powercap folder (`/sys/class/powercap`; another one in tests).
    """
    zones = rapl_zones(root)
    if not zones:
        return None

    def sample() -> list[tuple[str, str, float]]:
        rows = []
        for zone in zones:
            try:
                now = int(zone.energy_file.read_text())
            except (OSError, ValueError) as exc:  # a reading missed: the next one covers it
                log.debug("%s: %s", zone.name, exc)
                continue
            step = now - zone.last_uj
            zone.total_uj += step if step >= 0 else step + zone.max_uj  # wrapped once
            zone.last_uj = now
            rows.append((SOURCE_PREFIX + zone.name, R.ENERGY_COUNTER_J, zone.total_uj / 1e6))
        return rows

    return at_start(sample)


def _zone(path: Path, name: str) -> Zone | None:
    """A zone whose counter and range read as integers; None otherwise (e.g. root only)."""
    try:
        first = int((path / "energy_uj").read_text())
        max_uj = int((path / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        return None
    return Zone(name, path / "energy_uj", max_uj, last_uj=first)


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
