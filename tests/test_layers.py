"""The layering contracts of docs/architecture.md hold (import-linter, in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_contracts_name_every_module_of_sweep():
    """A new module of sweep/ must be placed in the layers, not slip past the contracts."""
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    modules = {
        f"sweep.{p.stem if p.is_file() else p.name}"
        for p in (REPO / "sweep").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    only_core = [c for c in contracts["contracts"] if "only the foundation" in c["name"]]
    only_core += [c for c in contracts["contracts"] if c["name"].startswith("The foundation")]
    assert len(only_core) == 3
    for contract in only_core:
        named = set(contract["forbidden_modules"])
        assert modules - {"sweep.core"} <= named, f"{contract['name']}: {modules - named}"
