"""The local start's Ray settings stay as written after Ray has started with them.

Ray's head writes its object-spilling settings into the `_system_config` dict it is given; a
shared constant handed over as it is kept the first session's settings for every later start
in the same process (a test run starts many).
"""

from types import SimpleNamespace

import ray

from sweep.driver.driver import LOCAL_SYSTEM_CONFIG, NO_PRESTART, connect
from tests.helpers import environment_restored


def test_a_local_start_leaves_the_shared_settings_unchanged():
    before = dict(LOCAL_SYSTEM_CONFIG), dict(NO_PRESTART)
    cluster = SimpleNamespace(address=None, include_dashboard=False, num_cpus=1, num_gpus=0,
                              node_ip_address="127.0.0.1")  # fmt: skip
    with environment_restored():  # ray.init sets its own variables in this process
        assert connect(cluster)
        try:
            assert ray.is_initialized()
        finally:
            ray.shutdown()
    assert (dict(LOCAL_SYSTEM_CONFIG), dict(NO_PRESTART)) == before
