"""When the driver starts a helper task for a deployment: only when it can end it sooner."""

from types import SimpleNamespace

from sweep.driver.driver import Driver


def driver(walls=None, start_costs=()):
    d = Driver(store=None, environment={}, cluster=None, progress=None)
    for deployment_id, times in (walls or {}).items():
        for wall in times:
            d.note_wall(deployment_id, wall)
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


class Recorder:
    """Stands in for the ledger and the progress display; counts what the driver asks."""

    def __init__(self):
        self.released = []
        self.finished = 0

    def release(self, trial_ids, task_key):
        self.released.append((task_key, list(trial_ids)))

    def deployment_finished(self):
        self.finished += 1


def sharing(monkeypatch):
    """A driver with a victim task (t1..t4) and its helper (t4, t3); submits are recorded."""
    from sweep.driver.driver import _Task
    from sweep.spec import Deployment

    trials = tuple(SimpleNamespace(trial_id=f"t{i}") for i in range(1, 5))
    deployment = Deployment("d", "sim", None, trials)
    cluster = SimpleNamespace(max_retries=2, share_idle_gpus=True)
    recorder = Recorder()
    d = Driver(store=None, environment={}, cluster=cluster, progress=recorder)
    d.ledger = recorder
    victim = _Task(deployment, "gen-v", 0, 0.0, "v")
    helper = _Task(deployment.with_trials(trials[:1:-1]), "gen-h", 0, 0.0, "h", helper=True)
    d.tasks = [victim, helper]
    submits = []

    def submit(dep, attempt, helper=False):  # records the call; the new task is live
        submits.append(([t.trial_id for t in dep.trials], helper))
        d.tasks.append(_Task(dep, "gen-new", attempt, 0.0, "new", helper=helper))

    monkeypatch.setattr(d, "_submit", submit)
    return d, victim, helper, recorder, submits


def test_a_lost_helpers_trials_go_back_to_the_task_it_helped(monkeypatch):
    d, victim, helper, recorder, submits = sharing(monkeypatch)
    d.recorded = {"t1"}
    d._died(helper, "node died")
    assert recorder.released == [("h", ["t4", "t3"])]  # its claims, so the victim can take them
    assert submits == []  # no retry: the victim still runs and claims them
    assert recorder.finished == 0
    # the victim had already skipped t4 as the helper's: it is run again once the victim ends
    d.recorded |= {"t2", "t3"}
    d._finish(victim)
    assert submits == [(["t4"], False)]
    assert recorder.finished == 0  # the deployment is not done until t4 is


def test_a_lost_original_is_retried_beside_its_live_helper(monkeypatch):
    d, victim, helper, recorder, submits = sharing(monkeypatch)
    d.recorded = {"t1"}
    d._died(victim, "node died")
    assert recorder.released == [("v", ["t2", "t3", "t4"])]
    assert submits == [(["t2", "t3", "t4"], False)]  # the helper keeps its claims on the rest
    d.recorded |= {"t2", "t3", "t4"}
    d._finish(helper)
    assert submits == [(["t2", "t3", "t4"], False)] and recorder.finished == 0


def test_trials_a_lost_worker_claimed_late_are_freed_before_they_run_again(monkeypatch):
    """A node cut off comes back: its worker claims t4 after the driver released its claims, so
    the retry skipped t4. Once no task of the deployment lives, any claim on t4 is freed."""
    d, victim, helper, recorder, submits = sharing(monkeypatch)
    d.tasks = [victim]
    d.recorded = {"t1", "t2", "t3"}
    d._finish(victim)
    assert recorder.released == [(None, ["t4"])]  # whoever holds it: no live task does
    assert submits == [(["t4"], False)]


def test_a_task_whose_node_ray_declared_dead_is_given_up(monkeypatch):
    """No error reaches the driver from a node that stopped answering; Ray's node table does."""
    import sweep.driver.driver as driver_module

    d, victim, helper, recorder, submits = sharing(monkeypatch)
    victim.node_id, victim.node_ip = "node-a", "10.0.0.1"
    helper.node_id = "node-b"
    d.recorded = {"t1"}
    nodes = [{"NodeID": "node-a", "Alive": False}, {"NodeID": "node-b", "Alive": True}]
    cancelled = []
    monkeypatch.setattr(driver_module, "_cancel", lambda gen, force: cancelled.append(gen))
    d._drop_tasks_on_dead_nodes(nodes)
    assert cancelled == ["gen-v"]
    assert recorder.released == [("v", ["t2", "t3", "t4"])]
    assert submits == [(["t2", "t3", "t4"], False)]  # retried beside the helper
    assert "gen-v" not in [t.generator for t in d.tasks]  # what it sends later is not read


def test_each_task_of_a_deployment_keeps_its_server_log_under_a_name_of_its_own():
    """The first task's log is backend.log; helpers and later tasks (retries) get their own
    names, numbered per deployment, so no task's log is written over another's."""
    from sweep.core import records as R

    d = driver()
    names = [
        d._log_name("a", helper=False),  # the deployment's task
        d._log_name("b", helper=False),  # another deployment's
        d._log_name("a", helper=True),  # a helper on an idle GPU
        d._log_name("a", helper=False),  # a retry after a lost worker
        d._log_name("a", helper=True),  # a second helper (a search replica)
        d._log_name("a", helper=False),  # the rest of a hung trial
    ]
    assert names == [
        "backend.log", "backend.log", "backend.helper-1.log", "backend.retry-1.log",
        "backend.helper-2.log", "backend.retry-2.log",
    ]  # fmt: skip
    assert R.BACKEND_LOG == "backend.log"
