"""The faults the sim server can inject, named once for its config schema and for the server.

`500` and `429` answer with that HTTP status; halfway through a stream, `truncate` ends the body
without its final events, `reset` drops the connection, `malformed` sends an event that is not
JSON, and `stall` stops sending (for an hour). The server imports only this module of the config
code, so it starts without the config libraries.
"""

SIM_FAULT_KINDS = ("500", "429", "truncate", "malformed", "stall", "reset")
