"""Debian's chromium driven by Playwright (never a browser Playwright downloads), and axe-core
loaded from the npm package scripts/test.sh installs under tests/console/.npm."""
from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
AXE = HERE / ".npm" / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")


def launch(playwright):
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/test.sh (it installs Debian's chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)


def axe_violations(page) -> list[dict]:
    """axe-core's serious and critical violations of the page as it is now."""
    if not AXE.exists():
        raise RuntimeError(f"{AXE} is missing: run scripts/test.sh (it installs axe-core from npm)")
    page.evaluate(AXE.read_text())
    found = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']})).violations
        .map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))""")
    return [v for v in found if v["impact"] in SERIOUS]


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page, url: str, key: str) -> None:
    page.goto(url + "/console")
    page.get_by_label("Admin key or team key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#who:not(:empty)")
