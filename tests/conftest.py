"""Test-wide settings.

Ray rewrites a loopback cluster address (127.0.0.1:PORT) to the machine's outward address before
connecting, and that address is closed on these machines; this switch (read when ray is first
imported) keeps drivers on loopback, where every test cluster is bound.
"""

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
