"""The layering contracts of docs/architecture.md hold (import-linter, in pyproject.toml).

Each contract is also shown to break: a copy of the packages gets one import that crosses a
layer the wrong way, and lint-imports, run there with the project's own configuration, must
report that contract broken and name the import.
"""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("sweep", "backends", "analysis")


def lint(root: Path, contract: str | None = None) -> subprocess.CompletedProcess:
    """lint-imports over the packages under `root`, with the pyproject.toml found there."""
    args = [str(LINT), "--no-cache", *([f"--contract={contract}"] if contract else [])]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def contract(contract_id: str) -> dict:
    """The contract of pyproject.toml with `id` `contract_id`."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c.get("id") == contract_id)


def test_import_contracts_are_kept():
    done = lint(REPO)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _named(contract_id: str) -> set[str]:
    layers = contract(contract_id)["layers"]
    return {name.strip().strip("()") for layer in layers for name in re.split("[:|]", layer)}


def _top_level(package: str) -> set[str]:
    """The modules and folders at the top of `package`, as import paths."""
    return {
        f"{package}.{p.stem if p.is_file() else p.name}"
        for p in (REPO / package).iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }


PACKAGE_CONTRACTS = [("sweep", "layers"), ("analysis", "analysis")]


@pytest.mark.parametrize(("package", "contract_id"), PACKAGE_CONTRACTS)
def test_everything_at_the_top_of_a_package_is_in_a_layer(package, contract_id):
    """A new module or folder of sweep/ or analysis/ must be placed in the layers."""
    modules = _top_level(package)
    assert f"{package}.__main__" in modules
    assert len(modules) >= 6, modules  # folders by layer, not a flat package
    named = _named(contract_id)
    assert modules <= named, f"not in a layer: {sorted(modules - named)}"


def _not_python(folder: str, names: list[str]) -> list[str]:
    return [
        n
        for n in names
        if n == "__pycache__" or (Path(folder, n).is_file() and not n.endswith(".py"))
    ]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of the packages' Python files and of pyproject.toml."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copy(REPO / "pyproject.toml", root)
    for package in PACKAGES:
        shutil.copytree(REPO / package, root / package, ignore=_not_python)
    return root


def test_the_copy_keeps_every_contract(tree):
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    done = lint(tree)
    assert done.returncode == 0, done.stdout[-4000:]
    assert f"Contracts: {len(config['contracts'])} kept, 0 broken." in done.stdout


WRONG_WAY = [
    ("sweep/worker/trial.py", "sweep.plan.plan", "layers"),  # the worker imports the planner
    ("sweep/plan/plan.py", "sweep.driver.placement", "layers"),  # the planner the driver
    ("sweep/measure/telemetry.py", "sweep.worker.environment", "layers"),
    ("sweep/driver/driver.py", "sweep.image.node_image", "layers"),
    ("sweep/plan/search_plan.py", "sweep.worker.search", "planner"),  # the planner the worker
    ("sweep/spec.py", "sweep.worker.trial", "layers"),  # the trial specs sit below the worker
    ("sweep/loadgen/clock.py", "sweep.worker.trial", "layers"),
    ("sweep/core/records.py", "sweep.spec", "layers"),  # the foundation imports nothing
    ("backends/base.py", "sweep.loadgen.clock", "layers"),
    ("analysis/read/load.py", "backends", "layers"),  # analysis reads results only
    ("sweep/driver/driver.py", "analysis.read.load", "reporting"),  # only the entry reports
    ("analysis/stats/compare.py", "analysis.figures.plots", "analysis"),  # comparisons draw not
    ("analysis/read/columns.py", "analysis.stats.intervals", "analysis"),
    ("analysis/figures/plots.py", "analysis.report.sections", "analysis"),
    ("analysis/report/findings.py", "analysis.tracking.wandb_cells", "analysis"),  # siblings
    ("analysis/tracking/tracking.py", "analysis.report.report", "analysis"),
]


@pytest.mark.parametrize(("path", "imported", "contract_id"), WRONG_WAY)
def test_an_import_the_wrong_way_breaks_its_contract(tree, path, imported, contract_id):
    file = tree / path
    original = file.read_text()
    file.write_text(f"{original}\nimport {imported}  # the wrong way\n")
    try:
        done = lint(tree, contract_id)
    finally:
        file.write_text(original)
    importer = path.removesuffix(".py").replace("/", ".")
    assert done.returncode == 1, done.stdout[-4000:]
    assert "Contracts: 0 kept, 1 broken." in done.stdout
    assert re.search(rf"{re.escape(importer)} -> {re.escape(imported)}\b", done.stdout), (
        done.stdout[-4000:]
    )
