"""The sortable, filterable per-trial table of report.html, drawn by ITables (DataTables).

ITables ships the DataTables library inside its Python package; its offline mode inlines that
bundle once in the page (base64, about 1 MB), so report.html stays one file that opens without
a network. The rows go in as data (no per-row HTML), which keeps a 10,000-trial table to a few
MB; DataTables pages, sorts and searches them in the browser.
"""

from __future__ import annotations

import pandas as pd
from itables import options as itables_options
from itables import to_html_datatable
from itables.javascript import generate_init_offline_itables_html

PAGE_LENGTHS = [25, 100, 500, -1]  # rows per page the reader can choose; -1: all


def browse_library() -> str:
    """The script that loads DataTables into the page: once, before any table."""
    return generate_init_offline_itables_html(itables_options.dt_bundle)


def browse_table(frame: pd.DataFrame, caption: str = "") -> str:
    """`frame` as an interactive table: click a header to sort, type in the box to filter."""
    return to_html_datatable(
        frame.reset_index(drop=True),
        caption=caption or None,
        connected=False,
        maxBytes=0,  # every row: the point of the table is to find any trial
        lengthMenu=PAGE_LENGTHS,
        pageLength=PAGE_LENGTHS[0],
        showIndex=False,
        display_logo_when_loading=False,
        classes="display compact",
    )
