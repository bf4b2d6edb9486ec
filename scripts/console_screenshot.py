"""Makes docs/console-spend.png: the console's spend page on `--demo`'s sample data, in Debian's
chromium. Run from the repository root: `python3 scripts/console_screenshot.py`."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.console.browser import launch, sign_in  # noqa: E402
from tests.gateway_server import GatewayThread  # noqa: E402

ADMIN_KEY = "sk-screenshot-admin-key-0000"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder, \
            GatewayThread(demo=True, admin_key=ADMIN_KEY, usage_spill_path=f"{folder}/spill.jsonl") as demo, \
            sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        sign_in(page, demo.url, ADMIN_KEY)
        page.get_by_label("Break down by").select_option("model")
        page.get_by_role("button", name="Show").click()
        page.wait_for_selector("#spend-table caption:has-text('by day and model')")
        page.wait_for_selector("#budgets .card")
        out = ROOT / "docs" / "console-spend.png"
        page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": 1200, "height": 1000})
        browser.close()
        print(out)


if __name__ == "__main__":
    main()
