"""The HTML report in a real headless Chromium: it renders every plot, offline, without console
errors. The screenshot is kept in tests/artifacts/ (git-ignored) for a human to look at."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from starcoder_router._simulate.report import write_report
from starcoder_router._simulate.runner import simulate
from support.chromium import open_page, start_chromium
from support.processes import stop
from support.simulation import budget_config, counts_workload

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    proc, port = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield port
    finally:
        stop(proc)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    config = budget_config(tmp / "router.toml", tenant_usd=0.02)
    # A tenant name that would end the page's scripts if the report did not escape it: it
    # reaches the summary table and, through the budget keys, a plot legend.
    hostile = "</script><script>console.error('injected')</script>"
    result = simulate(counts_workload(400, seed=3, tenants=("ide", hostile)), config=config)
    assert any(s.budget_exhausted_at_s for s in result.summaries), "burn-down needs exhaustion"
    path = tmp / "report.html"
    write_report(path, result, workload_name="test workload")
    return path


async def _load(port: int, url: str, *, settle_s: float = 0.5,  # type: ignore[no-untyped-def]
                width: int | None = None):
    session = aiohttp.ClientSession()
    page, ws = await open_page(session, port)
    if width is not None:
        await page.send("Emulation.setDeviceMetricsOverride", width=width, height=1000,
                        deviceScaleFactor=1, mobile=False)
    loaded = page.expect("Page.loadEventFired")
    await page.send("Page.navigate", url=url)
    await asyncio.wait_for(loaded.wait(), 60)
    await asyncio.sleep(settle_s)  # late errors (a plot drawn after load) still count
    return session, page, ws


async def test_report_renders_every_plot_without_console_errors(chromium: int,
                                                                report: Path) -> None:
    session, page, ws = await _load(chromium, report.as_uri())
    try:
        # Offline: the page may load nothing but itself (plotly.js is inlined).
        resources = await page.evaluate(
            "performance.getEntriesByType('resource').map(e => e.name)")
        plots = await page.evaluate("""
            Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => ({
              id: d.id,
              svgs: d.querySelectorAll('svg.main-svg').length,
              traces: d.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length,
              points: d.querySelectorAll(
                '.barlayer .point path, .scatterlayer path.js-line').length,
              width: d.getBoundingClientRect().width,
            }))""")
        rows = await page.evaluate("document.querySelectorAll('table.summary tbody tr').length")
        titles = await page.evaluate(
            "document.querySelector('#fig-budget-burn-down .infolayer').textContent")
        ticks = await page.evaluate(
            "Array.from(document.querySelectorAll('.xtick text, .ytick text'))"
            ".map(e => e.textContent)")
        # Every table within the page's column, whatever the tenant names: none runs off the
        # right edge behind a scroll bar.
        overflow = await page.evaluate("""
            Array.from(document.querySelectorAll('table')).map(t =>
              t.getBoundingClientRect().right - document.body.getBoundingClientRect().right)
              .concat([document.documentElement.scrollWidth
                       - document.documentElement.clientWidth])""")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "simulate-report.png"
        await page.screenshot(shot)
        errors = list(page.errors)
    finally:
        await ws.close()
        await page.close()
        await session.close()
    assert resources == []
    assert [p["id"] for p in plots] == [
        "fig-cost-over-time", "fig-deployment-mix", "fig-budget-burn-down",
        "fig-prompt-sizes-and-deployment-windows"]
    for plot in plots:
        assert plot["svgs"] >= 1 and plot["traces"] >= 1 and plot["points"] >= 1, plot
        assert plot["width"] > 300, plot
    assert rows == 5
    assert "</script><script>" in titles  # shown as text, not run
    # Numbers on the axes are written as in the tables: 2,500 and 10,000, not 2500 or 10k.
    assert ticks and not [t for t in ticks if re.search(r"\d{4}|\d[kMG]$", t)], ticks
    assert max(overflow) <= 0, overflow
    assert errors == []
    assert shot.stat().st_size > 20_000  # a real picture, not a blank page
    shutil.copy(shot, report.with_suffix(".png"))


# Each figure's annotations (window labels, panel titles) and legend, as boxes on the page.
_LABEL_BOXES = """
Object.fromEntries(Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => [d.id,
  Array.from(d.querySelectorAll('text.annotation-text, .legend .bg')).map(e => {
    const r = e.getBoundingClientRect();
    return {text: e.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom};
  })]))"""


@pytest.mark.parametrize("width", [1400, 900])
async def test_no_label_overlaps_another_at_a_wide_or_narrow_window(
        chromium: int, report: Path, width: int) -> None:
    session, page, ws = await _load(chromium, report.as_uri(), width=width)
    try:
        boxes = await page.evaluate(_LABEL_BOXES)
        panels = await page.evaluate(
            "document.querySelectorAll('#fig-budget-burn-down .cartesianlayer > .subplot').length")
        windows = await page.evaluate("document.querySelectorAll("
                                      "'#fig-prompt-sizes-and-deployment-windows "
                                      "text.annotation-text').length")
    finally:
        await ws.close()
        await page.close()
        await session.close()
    for fig, found in boxes.items():
        for i, a in enumerate(found):
            assert a["right"] > a["left"], (fig, a)
            for b in found[i + 1:]:
                apart = (a["right"] <= b["left"] or b["right"] <= a["left"]
                         or a["bottom"] <= b["top"] or b["bottom"] <= a["top"])
                assert apart, (width, fig, a, b)
    assert panels == 2  # the two tenants' daily budgets, each in its own panel
    assert windows == 2  # two windows (8,192 and 16,384 tokens), one label each


async def test_the_check_sees_console_errors(chromium: int, tmp_path: Path) -> None:
    """The same check on a page that logs an error and throws: it must notice both."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('broken plot');"
                   "undefinedFunction();</script></body></html>", encoding="utf-8")
    session, page, ws = await _load(chromium, bad.as_uri())
    try:
        errors = list(page.errors)
    finally:
        await ws.close()
        await page.close()
        await session.close()
    assert any("broken plot" in e for e in errors)
    assert any("undefinedFunction" in e for e in errors)
