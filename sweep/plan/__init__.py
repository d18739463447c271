"""The planner: composes the Hydra config of every grid point and turns it into trial specs.

`schema` (the structured configs Hydra checks against), `compose`, `plan` (the grid's trials
and deployments) and `search_plan` (a capacity or profile search's seed and checks). It never
imports the worker: the two share `sweep.spec`.
"""
