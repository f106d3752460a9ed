"""Headless Chromium for the page's browser tests (tests/integration/test_page_token.py,
test_operator_page.py): Debian's chromium and chromium-driver (scripts/browser.sh, run by
`make setup`); Selenium is pointed at them and downloads nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as visible
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT = 20


class Browser:
    """One headless Chromium session on a profile directory (kept between sessions)."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900) -> None:
        options = Options()
        options.binary_location = str(CHROMIUM)
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(
            options=options, service=Service(executable_path=str(CHROMEDRIVER))
        )
        self.console: list[str] = []
        self.running = True

    def wait_visible(self, element_id: str) -> Any:
        return WebDriverWait(self.driver, WAIT).until(
            visible.visibility_of_element_located((By.ID, element_id))
        )

    def wait_text(self, element_id: str, text: str, timeout: float = WAIT) -> None:
        WebDriverWait(self.driver, timeout).until(
            visible.text_to_be_present_in_element((By.ID, element_id), text)
        )

    def shown(self, element_id: str) -> bool:
        return bool(self.driver.find_element(By.ID, element_id).is_displayed())

    def text(self, element_id: str) -> str:
        return str(self.driver.find_element(By.ID, element_id).text)

    def script(self, source: str, *args: Any) -> Any:
        return self.driver.execute_script(source, *args)

    def collect_console(self) -> None:
        self.console += [entry["message"] for entry in self.driver.get_log("browser")]

    def quit(self) -> None:
        if self.running:
            self.running = False
            self.collect_console()
            self.driver.quit()


@pytest.fixture
def browsers() -> Iterator[list[Browser]]:
    """Sessions started by the test (quit at the end); the test appends each one it starts."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if not os.access(program, os.X_OK):
            pytest.fail(
                f"{program} is missing: run `bash scripts/browser.sh` (make setup does)",
                pytrace=False,
            )
    started: list[Browser] = []
    yield started
    for browser in started:
        browser.quit()


def csp_violations(console: list[str]) -> list[str]:
    """The console lines in which Chromium reports something the Content-Security-Policy refused."""
    return [line for line in console if "Content Security Policy" in line or "Refused to" in line]
