"""Open-loop schedules offer exactly the configured rate, whatever the seed."""

import numpy as np
import pytest

from sweep.loadgen.arrivals import arrival_offsets


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("burstiness", [0.5, 1.0, 3.0])
def test_schedule_mean_rate_is_the_configured_rate(seed, burstiness):
    offsets = np.array(arrival_offsets(200, 20.0, burstiness, seed))
    assert offsets[0] == 0.0
    assert offsets[-1] == pytest.approx(199 / 20.0, rel=1e-12)
    assert (np.diff(offsets) >= 0).all()
    # still random: two seeds give different schedules
    assert not np.allclose(offsets, arrival_offsets(200, 20.0, burstiness, seed + 10))
