"""Sweep orchestration: config, planning, the Ray driver, the load generator and results."""
