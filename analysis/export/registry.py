"""The formats `python -m analysis DIR --export` writes, and the writing of their files.

`FORMATS` maps each format's name to its `Format`: the suffix of its files and the function that
renders one trial. `export_results` writes every trial of a results folder in each format asked
for, one file per trial, `<out>/export/<format>/<trial_id><suffix>`, reading each trial's
requests once for all formats (so a sweep of 10,000 trials is never held at once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from analysis.export import llmd, vllm_json
from analysis.export.trial import ExportTrial
from analysis.read.load import load_requests, load_summary
from analysis.read.trial_folder import trial_folder
from sweep.core import records as rec
from sweep.core.errors import SweepError

EXPORT_DIR = "export"
SEPARATOR = ","


@dataclass(frozen=True)
class Format:
    """One export format: what its files hold, their suffix and how a trial is rendered."""

    description: str
    suffix: str
    render: Callable[[ExportTrial], str]


FORMATS: dict[str, Format] = {
    "llmd": Format("llm-d-benchmark's benchmark report v0.2 (YAML)", llmd.SUFFIX, llmd.render),
    "vllm": Format(
        "the JSON of vllm bench serve --save-result --save-detailed",
        vllm_json.SUFFIX,
        vllm_json.render,
    ),
}


@dataclass(frozen=True)
class Written:
    """The files one format got: its folder and how many."""

    format: str
    folder: Path
    files: int


def parse_formats(values: Iterable[str]) -> list[str]:
    """Format names from `--export` values (each may list several, comma separated).

    Returns:
        The names in the order given, each once.

    Raises:
        SweepError: a name that is not in `FORMATS`, or none at all.
    """
    names = [name.strip() for value in values for name in value.split(SEPARATOR)]
    names = [name for name in names if name]
    unknown = ", ".join(repr(name) for name in names if name not in FORMATS)
    choices = ", ".join(FORMATS)
    if unknown:
        raise SweepError(f"unknown export format {unknown}; choose from {choices}")
    if not names:
        raise SweepError(f"no export format given; choose from {choices}")
    return list(dict.fromkeys(names))


def export_results(results_dir: Path, out_dir: Path, names: Sequence[str]) -> list[Written]:
    """Write every trial of `results_dir` in the formats `names` under `out_dir/export/`.

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    folder = trial_folder(results_dir)
    summary = load_summary(folder)
    folders = {name: out_dir / EXPORT_DIR / name for name in names}
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    for row in summary.to_dict("records"):
        trial = ExportTrial.of(row, load_requests(folder, [str(row[rec.TRIAL_ID])]))
        for name, path in folders.items():
            form = FORMATS[name]
            text = form.render(trial)
            (path / f"{trial.trial_id}{form.suffix}").write_text(text, encoding="utf-8")
    return [Written(name, path, len(summary)) for name, path in folders.items()]
