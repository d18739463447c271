"""The load generator: offers a workload to a backend and owns every timestamp of a trial."""
