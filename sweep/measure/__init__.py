"""What a trial measures beside its requests.

`telemetry` (process and GPU samplers, the server's counters) and `powercap` (RAPL's energy
counters of a CPU trial).
"""
