"""The simulated server that `backend=sim` launches: run as `python -m backends.sim_server`.

`server` is the aiohttp server (its routes, its timer, its command line); `admission` its FIFO
queue behind `max_num_seqs`; `schedule` the latency schedule and faults that the sim backend's
config shares with it; `latencies` the server's own latency histograms under vLLM's names. The
sim backend itself (`backends.sim`) only launches it.
"""
