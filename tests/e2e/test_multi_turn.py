"""`python -m sweep` with a multi-turn dataset it cannot run: one line, before Ray starts."""

import ray

from tests.helpers import sweep_in_process


def test_an_in_process_backend_is_refused_in_one_line(tmp_path):
    done = sweep_in_process(
        "dataset=multi_turn",
        "backend=hf",
        "workload=closed_loop",
        "workload.num_requests=6",
        f"output.dir={tmp_path}",
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "dataset=multi_turn needs a server backend" in lines[0] and "backend=hf" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not any(tmp_path.iterdir())  # nothing planned, nothing written
    assert not ray.is_initialized()
