"""When the driver starts a helper task for a deployment: only when it can end it sooner."""

from types import SimpleNamespace

from sweep.driver import Driver


def driver(walls=None, start_costs=()):
    d = Driver(store=None, environment={}, cluster=None, progress=None)
    d.walls = walls or {}
    d.start_costs = list(start_costs)
    return d


def task(deployment_id="d", start_cost_s=None):
    return SimpleNamespace(deployment=SimpleNamespace(deployment_id=deployment_id),
                           start_cost_s=start_cost_s)  # fmt: skip


def test_a_helper_pays_when_its_start_is_shorter_than_the_work_left():
    assert driver({"d": [3.0, 3.0]})._helper_pays(task(start_cost_s=3.0), 2)  # 3 s < 6 s
    assert not driver({"d": [3.0, 3.0]})._helper_pays(task(start_cost_s=3.0), 1)  # 3 s = 3 s
    # a 60 s server start against 10 s trials: worth it only with more than 6 trials left
    assert not driver({"d": [10.0]})._helper_pays(task(start_cost_s=60.0), 6)
    assert driver({"d": [10.0]})._helper_pays(task(start_cost_s=60.0), 7)


def test_estimates_fall_back_to_the_sweep_and_unknown_means_no():
    # no trial of this deployment yet: other deployments' trials and starts stand in
    sweep_wide = driver({"other": [4.0]}, start_costs=[2.0, 7.0, 50.0])
    assert not sweep_wide._helper_pays(task(), 1)  # median start 7 s > 4 s
    assert sweep_wide._helper_pays(task(), 2)  # 7 s < 8 s
    assert not driver()._helper_pays(task(start_cost_s=1.0), 4)  # no trial times
    assert not driver({"d": [4.0]})._helper_pays(task(), 4)  # no start measured
