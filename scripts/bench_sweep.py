"""Makespan of a sweep on a simulated multi-node cluster against the ideal; or, with `--trials`,
the driver's own cost per trial at several sweep sizes.

    .venv/bin/python scripts/bench_sweep.py [--nodes 3] [--gpus 2] [--remove-at S] [--timeline]
    .venv/bin/python scripts/bench_sweep.py --trials 100 1000 10000 [--run-upto 1000]
    .venv/bin/python scripts/bench_sweep.py --start-costs [--repeats 5]
    .venv/bin/python scripts/bench_sweep.py --plan 4 6 8 10 [--rounds 3]

The benchmarks themselves, and what they print: `sweep.tools.makespan`,
`sweep.tools.driver_scale`, `sweep.tools.start_costs` (one deployment's start, step by step),
`sweep.tools.plan_scale` (the planner at grids of up to 10,000 points).
"""

import os

# Ray reads this as it is imported: the drivers of a local multi-node cluster stay on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from sweep.tools import driver_scale, makespan, plan_scale, start_costs  # noqa: E402

if __name__ == "__main__":
    parser = makespan.parser()
    driver_scale.add_arguments(parser)
    plan_scale.add_arguments(parser)
    parser.add_argument(
        "--start-costs", action="store_true", help="one deployment's start, step by step"
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs of each step (--start-costs)")
    args = parser.parse_args()
    if args.start_costs:
        print(start_costs.run(args.repeats))
    elif args.plan:
        plan_scale.run(args)
    elif args.trials:
        driver_scale.run(args)
    else:
        makespan.run(args)
