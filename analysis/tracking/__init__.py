"""W&B tracking of a sweep.

`tracking` (the one module that imports wandb), `tracking_groups`, `wandb_cells`,
`wandb_settings` and `wandb_workspace` (the saved workspace of a sweep).
"""
