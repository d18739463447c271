"""The driver: fans a plan's deployments out over Ray, waits for nodes, retries, resumes, records.

`driver` (the `Driver` itself), `placement` (which node a deployment fits), `node_types`,
`autoscaler_status` and `node_wait` (what the cluster may still launch, what it is setting up,
and how long a deployment waits for it), `ledger` (helpers on idle GPUs), `resume`,
`progress` and `job` (what changes under `ray job submit`).
"""
