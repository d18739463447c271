"""Reading a results folder.

`load` (its tables into pandas), `trial_folder` and `trial_cache` (one trial's files),
`columns` (the summary frame's columns as the rest of analysis reads them).
"""
