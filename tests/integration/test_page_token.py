"""The lookup page in a real browser (headless Chromium) against a worker with API_TOKENS set.

What a user of the page relies on: when the service wants a token the page asks for one with
a keyboard-usable form, then shows the order; the token lasts for the tab (a reload keeps it)
and no longer (a new browser session with the same profile does not have it, and it is never
in localStorage or a cookie); a refused token is forgotten with a clear message; and the page
runs under its Content-Security-Policy without a single violation.

The browser: tests/browser.py (Debian's chromium and chromium-driver, nothing downloaded).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from harness import eventually

from ..browser import Browser, csp_violations

pytestmark = pytest.mark.timeout(180)

MODEL_UID = "b563feb7b2b84b6test"
TOKEN = "page-token-4b7e19c2"


def page_flow(url: str, profile: Path, browsers: list[Browser]) -> None:
    """Everything a user does, in order (blocking: Selenium's API)."""
    first = Browser(profile)
    browsers.append(first)
    first.driver.get(f"{url}/#{MODEL_UID}")
    # The lookup got 401: the page asks for a token, with the keyboard on its field.
    first.wait_visible("token-form")
    first.wait_text("status", "needs an access token")
    assert not first.shown("result")
    field = first.driver.switch_to.active_element
    assert field.get_attribute("id") == "token-input"
    field.send_keys(TOKEN, Keys.ENTER)
    first.wait_visible("result")
    first.wait_text("result", "Test Testov")  # delivery name of model.json
    assert MODEL_UID in first.driver.find_element(By.ID, "result").text
    assert not first.shown("token-form")
    # Kept for the tab only: sessionStorage, nothing in localStorage or a cookie.
    assert first.script("return sessionStorage.getItem('orderstream.token')") == TOKEN
    assert first.script("return localStorage.length") == 0
    assert first.driver.get_cookies() == []

    # A reload in the same tab keeps it: the order shows without asking.
    first.driver.refresh()
    first.wait_visible("result")
    first.wait_text("result", "Test Testov")
    assert not first.shown("token-form")
    first.collect_console()
    console_of_the_flow = list(first.console)
    first.quit()

    # A new browser session on the same profile does not have it.
    second = Browser(profile)
    browsers.append(second)
    second.driver.get(f"{url}/#{MODEL_UID}")
    second.wait_visible("token-form")
    assert not second.shown("result")
    assert second.script("return sessionStorage.getItem('orderstream.token')") is None
    # A refused token is forgotten, and the page says so.
    second.driver.switch_to.active_element.send_keys("not-the-token", Keys.ENTER)
    second.wait_text("status", "refused the token")
    second.wait_visible("token-form")
    assert second.script("return sessionStorage.getItem('orderstream.token')") is None
    second.driver.switch_to.active_element.send_keys(TOKEN, Keys.ENTER)
    second.wait_text("result", "Test Testov")
    second.collect_console()
    console_of_the_flow += second.console

    # No Content-Security-Policy violation anywhere in the flow ...
    assert not csp_violations(console_of_the_flow), console_of_the_flow
    # ... and the policy is in force: an inline script injected now does not run, and shows.
    ran = second.script("""
        window.injectedRan = false;
        const inline = document.createElement("script");
        inline.textContent = "window.injectedRan = true;";
        document.body.append(inline);
        return window.injectedRan;""")
    assert ran is False
    second.collect_console()
    assert csp_violations(second.console), second.console


async def test_page_asks_for_a_token_and_keeps_it_for_the_tab_only(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    model_json: bytes,
    tmp_path: Path,
    browsers: list[Browser],
) -> None:
    worker = await start_worker(API_TOKENS=TOKEN)
    await producer.send_and_wait(pipeline_env["KAFKA_TOPIC"], model_json, key=MODEL_UID.encode())

    async def stored() -> bool:
        async with http.get(
            f"{worker.url}/order/{MODEL_UID}", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as reply:
            return reply.status == 200

    await eventually(stored, what="model.json served")

    await asyncio.to_thread(page_flow, worker.url, tmp_path / "profile", browsers)
    assert TOKEN not in worker.log()
