"""The report: report.md, report.html and summary.csv.

`report` writes them from `sections`, the opening `findings` and one module per table;
`html` renders the page, `console` the terminal's lines.
"""
