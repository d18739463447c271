"""The first checks to run on a real GPU, in order, with a pass / fail table.

    scripts/gpu_smoke.sh [--hardware l4] [--cluster-address HOST:PORT] [--results-dir results]

1. the engines import and CUDA works: `import vllm, torch; torch.zeros(1).cuda()`;
2. study D's server configurations 1, 3 and 5 through local Ray at a small `num_requests` on
   one GPU: every trial `ok`, the GPU named (`env.gpu_name`), suffix decoding's
   `spec_acceptance_percent` recorded for configuration 5, a worker process per deployment;
3. study B's `batch_size_sweep` at batch sizes 1 and 8: every trial `ok` on a named GPU;
4. a one-trial sweep on a running cluster (`--cluster-address`; skipped without one), which
   starts from `min_workers: 0`: the deployment waits for the autoscaler and runs.
A check that needs CUDA is skipped once the first check failed. The table is printed and
written to `RESULTS/gpu_smoke/<UTC time>/table.md`, beside each check's results folder; the
exit status is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.report.sections import markdown_table
from sweep.core import records as R

CUDA_PROBE = (
    "import vllm, torch; torch.zeros(1).cuda(); "
    "print(torch.cuda.get_device_name(0), 'vllm', vllm.__version__)"
)
TUNING = [
    "vllm_tuning/c1_default", "vllm_tuning/c3_seqs128_fp8", "vllm_tuning/c5_seqs256_fp8_suffix16",
]  # fmt: skip


@dataclass
class Check:
    """One row of the table."""

    name: str
    result: str  # pass, fail, skipped
    detail: str


def parser() -> argparse.ArgumentParser:
    """The options of `scripts/gpu_smoke.sh`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hardware", default="l4", help="conf/hardware option of this GPU")
    p.add_argument("--cluster-address", default=None, help="a running cluster for check 4")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--num-requests", type=int, default=16)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the checks in order; print and write the table; 1 when any failed."""
    folder = args.results_dir / "gpu_smoke" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder.mkdir(parents=True, exist_ok=True)
    checks = [cuda_check()]
    cuda = checks[0].result == "pass"
    small = [f"workload.num_requests={args.num_requests}", f"hardware={args.hardware}"]
    grid = "sweep.grid.backend=[" + ",".join(TUNING) + "]"
    sweeps = [
        ("server_tuning c1, c3, c5", ["+experiment=server_tuning", grid, *small,
                                      "workload.output_len=64", "dataset.input_len=128"],
         [R.SPEC_ACCEPTANCE_PERCENT]),
        ("batch_size_sweep at 1 and 8", ["+experiment=batch_size_sweep",
                                         "sweep.grid.workload.batch_size=[1,8]",
                                         f"hardware={args.hardware}"], []),
    ]  # fmt: skip
    for name, overrides, columns in sweeps:
        if not cuda:
            checks.append(Check(name, "skipped", "needs CUDA (check 1 failed)"))
            continue
        checks.append(sweep_check(name, overrides, folder / name.split()[0], columns))
    if args.cluster_address is None:
        checks.append(Check("one trial on a cluster", "skipped", "no --cluster-address"))
    else:
        checks.append(sweep_check(
            "one trial on a cluster",
            ["+experiment=server_tuning", "sweep.grid.backend=[vllm_tuning/c1_default]",
             f"workload.num_requests={args.num_requests}",
             f"cluster.address={args.cluster_address}"],
            folder / "cluster", [],
        ))  # fmt: skip
    table = markdown_table(pd.DataFrame([vars(c) for c in checks]))
    (folder / "table.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"written to {folder / 'table.md'}")
    return 1 if any(c.result == "fail" for c in checks) else 0


def cuda_check() -> Check:
    """Check 1: the engines import and a tensor reaches the GPU."""
    done = subprocess.run([sys.executable, "-c", CUDA_PROBE], capture_output=True, text=True)
    name = "import vllm, torch; CUDA"
    if done.returncode != 0:
        return Check(name, "fail", last_line(done.stderr))
    return Check(name, "pass", done.stdout.strip())


def sweep_check(name: str, overrides: list[str], out: Path, columns: list[str]) -> Check:
    """Run a sweep as a user does and judge what it recorded (`verify`)."""
    command = [sys.executable, "-m", "sweep", *overrides, f"output.dir={out}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return Check(name, "fail", last_line(done.stderr))
    problems = verify(summaries(out), columns)
    return Check(name, "fail" if problems else "pass", "; ".join(problems) or "every trial ok")


def summaries(out: Path) -> pd.DataFrame:
    """Every trial's summary row under the results folder `out`."""
    files = sorted(out.rglob(R.SUMMARY_FILE))
    return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()


def verify(rows: pd.DataFrame, columns: list[str]) -> list[str]:
    """What is wrong with a GPU sweep's summary rows (empty when nothing is)."""
    if rows.empty:
        return ["no trial recorded"]
    problems = []
    failed = rows[rows[R.TRIAL_STATUS] != R.STATUS_OK]
    if len(failed):
        first = failed.iloc[0]
        problems.append(f"{len(failed)} of {len(rows)} failed ({first[R.ERROR_KIND]}: "
                        f"{first[R.ERROR_MESSAGE]})")  # fmt: skip
    if "env.gpu_name" not in rows or rows["env.gpu_name"].isna().any():
        problems.append("env.gpu_name missing: NVML did not see the GPU")
    # The speculative configurations (suffix decoding) are the ones that record acceptance.
    speculative = rows[R.GROUP_CHOICES].fillna("").str.contains("suffix")
    for column in columns:
        if column not in rows or rows.loc[speculative, column].isna().any():
            problems.append(f"{column} missing where the config asks for it")
    pids = rows.groupby(R.DEPLOYMENT_ID)[R.ENV_WORKER_PID].first()
    if pids.nunique() < len(pids):
        problems.append("two deployments shared a worker process")
    return problems


def last_line(text: str) -> str:
    """The last non-empty line of a process's output (its error)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
