"""Take docs/report-screenshot.png again: the shipped workload (examples/workload.jsonl) through
examples/router.toml with `simulate --report`, the report opened in headless Chromium 1200 px
wide, and the whole page captured at 0.75 scale. Run it after changing the report, look at the
picture, and commit it:

    python tests/support/report_screenshot.py [OUTPUT.png]

The report test (tests/simulate/test_report_browser.py) takes its own screenshot on every run,
into tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.chromium import open_page, start_chromium  # noqa: E402
from support.processes import stop  # noqa: E402


async def _shoot(port: int, report: Path, out: Path) -> list[str]:
    async with aiohttp.ClientSession() as session:
        page, ws = await open_page(session, port)
        try:
            await page.send("Emulation.setDeviceMetricsOverride", width=1200, height=1000,
                            deviceScaleFactor=1, mobile=False)
            loaded = page.expect("Page.loadEventFired")
            await page.send("Page.navigate", url=report.as_uri())
            await asyncio.wait_for(loaded.wait(), 60)
            await asyncio.sleep(1)
            await page.screenshot(out, scale=0.75)
            return list(page.errors)
        finally:
            await ws.close()
            await page.close()


def main(out: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.html"
        subprocess.run([sys.executable, "-c",
                        "import sys; from starcoder_router._cli import main; sys.exit(main())",
                        "simulate", "examples/workload.jsonl", "--config", "examples/router.toml",
                        "--report", str(report)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        proc, port = start_chromium(Path(tmp) / "profile")
        try:
            errors = asyncio.run(_shoot(port, report, out))
        finally:
            stop(proc)
    print(f"wrote {out}" + (f"; console errors: {errors}" if errors else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/report-screenshot.png"))
