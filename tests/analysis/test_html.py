"""The self-contained HTML report: its content, and that a real browser renders it."""

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis.report.report import ReportOptions, write_report

REF = Path(__file__).resolve().parent / "data" / "ref_sweep"
CHROMIUM = shutil.which("chromium")
WINDOW = (1280, 2000)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    return write_report(REF, out, ReportOptions(slo={"ttft_ms": 250.0}))


def test_html_is_self_contained_and_has_every_section(report):
    html = report.report_html.read_text()
    assert html.startswith("<!DOCTYPE html>")
    for title in (
        "Results",
        "Plots",
        "Against the baseline",
        "Pareto front",
        "Goodput under SLOs",
        "Roofline",
        "Timelines",
        "Request checks",
        "Failed trials",
        "Environment",
    ):
        assert f"<h2>{title}</h2>" in html
    images = re.findall(r'<img alt="[^"]+" src="([^"]+)"', html)
    assert len(images) == len(report.plots)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing to fetch
    # The failed trial with its reason, and a flagged one (token counts disagree).
    assert "out_of_memory" in html and "1.5 GiB is free" in html
    assert "client and server token counts differ on 1 request(s)" in html
    assert "<code>20e5f44e7c56</code>" in html


def test_html_escapes_what_it_shows(tmp_path):
    from analysis.report.html import render_html
    from analysis.report.sections import Section

    page = render_html("<b>x</b>", "a & b", [Section("t", "1 < 2 `code`", items=("<i>",))])
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "a &amp; b" in page
    assert "1 &lt; 2 <code>code</code>" in page and "<li>&lt;i&gt;</li>" in page


class _Text(HTMLParser):
    """The page's text as a reader sees it: tags dropped, style and script left out."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in ("style", "script")

    def handle_endtag(self, tag):
        self._hidden -= tag in ("style", "script")

    def handle_data(self, data):
        if not self._hidden:
            self.parts.append(data)


def rendered_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return " ".join("".join(parser.parts).split())


def test_markdown_emphasis_is_rendered_not_shown_as_asterisks(report):
    page = report.report_html.read_text()
    text = rendered_text(page)
    # The findings name the flagged trial's section; its emphasis is markup, not asterisks.
    assert "named with its reason under Request checks." in text
    assert "*Request checks*" not in text and "<em>Request checks</em>" in page
    assert "*" not in text.replace("`", "")


def test_emphasis_spares_code_spans_and_arithmetic():
    from analysis.report.html import render_html
    from analysis.report.sections import Section

    page = render_html("t", "", [Section("s", "*a b* `workload.*` 2 * 3 **c**")])
    assert "<em>a b</em> <code>workload.*</code> 2 * 3 <strong>c</strong>" in page


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y "
    "chromium); the browser rendering check needs it",
)
def test_html_renders_in_headless_chromium(report, tmp_path):
    png = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={png}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            report.report_html.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    shot = np.asarray(Image.open(png).convert("RGB"))
    assert shot.shape == (WINDOW[1], WINDOW[0], 3)
    non_white = int((shot.min(axis=2) < 240).sum())
    colours = len(np.unique(shot.reshape(-1, 3), axis=0))
    # A blank or failed page is one colour; text, tables and plots give thousands.
    assert non_white > 0.03 * shot.shape[0] * shot.shape[1], non_white
    assert colours > 500, colours


def _overflow_px(chromium: str, page: Path, width: int, profile: Path) -> int:
    """How far the page is wider than a `width`-pixel window, measured by Chromium itself."""
    probe = page.with_name(f"probe_{width}.html")
    script = (
        "<script>document.body.setAttribute('data-overflow', String("
        "document.documentElement.scrollWidth - window.innerWidth));</script>"
    )
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={width},900",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = re.search(r'data-overflow="(-?\d+)"', dom)
    assert found, dom[:500]
    return int(found.group(1))


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium); the width check needs it",
)
@pytest.mark.parametrize("width", [1280, 400])
def test_html_fits_a_laptop_and_a_phone_without_sideways_scrolling(report, tmp_path, width):
    page = tmp_path / "report.html"
    page.write_text(report.report_html.read_text())
    assert _overflow_px(CHROMIUM, page, width, tmp_path / "profile") <= 0
    # The check can fail: a table forced wider than the phone makes the page overflow.
    wide = tmp_path / "wide.html"
    wide.write_text(
        page.read_text().replace(
            "</body>", '<table style="width:2000px"><tr><td>x</td></tr></table></body>'
        )
    )
    assert _overflow_px(CHROMIUM, wide, width, tmp_path / "profile2") > 0
