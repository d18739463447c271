"""The study in the results folder: Optuna's journal file, so a killed sweep resumes with it.

`results/<sweep>/tune.journal` holds every trial Optuna asked for, its parameters, state and
value (Optuna's `JournalStorage` over a `JournalFileBackend`: an append-only log, written as each
trial is asked and told). Re-running the same command loads it (`load_if_exists`); the sampler
(TPE, multivariate and grouped for conditional fields, with the constant liar for configurations
in flight) is rebuilt from the trials, seeded with `search.tune.seed` plus the trials finished,
so a resumed run does not repeat the random draws of the first.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from sweep.core.tune_config import TuneConfig

JOURNAL = "tune.journal"
FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def open_study(
    root: str, name: str, tune: TuneConfig, sampler: optuna.samplers.BaseSampler | None = None
) -> optuna.Study:
    """The sweep's study in `root` (created on the first run, loaded on the next).

    `sampler`: another than the TPE below (the tuner's random look around, on the same study).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(f"{root}/{JOURNAL}"))
    try:
        finished = len(optuna.load_study(study_name=name, storage=storage).get_trials(
            deepcopy=False, states=FINISHED))  # fmt: skip
    except KeyError:  # no study of that name yet
        finished = 0
    with warnings.catch_warnings():  # multivariate and group are flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = sampler or optuna.samplers.TPESampler(
            seed=tune.seed + finished,
            n_startup_trials=tune.startup_trials,
            multivariate=True,
            group=True,
            constant_liar=True,
        )
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        direction=tune.goal,
        load_if_exists=True,
    )
