"""`MISSING`: the value of a config field that has no default and must be given.

Spelled as OmegaConf spells it (`omegaconf.MISSING` is the string "???"), so Hydra treats these
fields as required, while the schema modules a Ray worker imports (`sweep.core.config`,
`backends.config` and the backends' configs) do not import OmegaConf itself: about 50 ms of
CPU in every worker a deployment boots. `tests/conf/test_conf_defaults.py` holds the two equal.
"""

MISSING = "???"
