"""What a server backend does around its server process, with no backend contract in it.

`argv` builds a server's command line from config maps; `group` runs the server as a child
process group (health wait, logs, stop, the one line that says why it failed); `launcher` starts
it on a free port, or probes a server that is already running; `prometheus` scrapes its
`/metrics`; `scratch` gives it a temporary folder that the next server clears if a killed worker
left it behind. The base class of the backends that launch a server is `backends.launched`.
"""
