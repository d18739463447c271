"""`python -m backends.sim_server`: serve the simulated server until SIGTERM or SIGINT."""

from backends.sim_server.command import main

main()
