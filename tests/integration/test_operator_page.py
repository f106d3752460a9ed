"""The operator view and /docs in a real browser (headless Chromium) against a real worker.

What an operator relies on: the page asks once for the token (API_TOKENS set) and then shows
the live pipeline; a typed id renders that order with where it came from and how long it
took, an unknown id says so; orders produced to Kafka move the live counters and appear
among the recent orders, whose links open the lookup (in this tab and in a new one; the tab
left in the background stops polling until it is shown again); a bad
message appears among the dead letters, shown as text, and Replay republishes it unchanged
to the orders topic with its origin in a header (it is still bad, so it comes back to the
DLQ marked as replayed); when the worker goes away the panel says so. Every text on the page
is at least 4.5:1 against its background, the page fits a phone's width, and nothing breaks
the Content-Security-Policy. /docs renders every path of openapi.yaml from this origin only,
and its "Try it out" reaches this worker.

Each state is saved as a PNG under the test's tmp_path (the paths are printed: `pytest -s`).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from harness import REPO_ROOT, Worker, eventually
from orderstream.order import encode_order, random_orders

from ..browser import Browser, csp_violations

pytestmark = pytest.mark.timeout(300)

MODEL_UID = "b563feb7b2b84b6test"
TOKEN = "operator-page-token-5d1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW_ORDERS = 20
# A payload that would be markup if the page ever used innerHTML.
BAD_MESSAGE = b'not json <b id="injected">bold</b><img src=x id="injected-img">'
LIVE = 30  # seconds for what the page shows after a poll or two (2 s each, dead letters 6 s)

# Every element with text of its own: its colour against the first opaque background behind it.
CONTRAST_SCRIPT = """
function rgba(text) {
  const [r, g, b, a] = text.match(/[\\d.]+/g).map(Number);
  return { r, g, b, a: a === undefined ? 1 : a };
}
function luminance({ r, g, b }) {
  const lin = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}
function background(node) {
  for (let n = node; n; n = n.parentElement) {
    const bg = rgba(getComputedStyle(n).backgroundColor);
    if (bg.a >= 0.99) return bg;
  }
  return { r: 255, g: 255, b: 255, a: 1 };
}
const seen = [];
for (const node of document.querySelectorAll("body *")) {
  const own = [...node.childNodes]
    .some((c) => c.nodeType === Node.TEXT_NODE && c.textContent.trim());
  const placeholder = node.matches("input[placeholder]") && !node.value;
  if (!own && !placeholder) continue;
  if (!node.getClientRects().length || node.closest(".visually-hidden")) continue;
  const style = getComputedStyle(node);
  if (style.visibility !== "visible" || Number(style.opacity) === 0) continue;
  const fg = rgba(placeholder ? getComputedStyle(node, "::placeholder").color : style.color);
  const [hi, lo] = [luminance(fg), luminance(background(node))].sort((x, y) => y - x);
  seen.push({ tag: node.tagName.toLowerCase(), id: node.id, cls: node.className,
              text: (placeholder ? node.placeholder : node.textContent).trim().slice(0, 30),
              color: fg, background: background(node),
              ratio: (hi + 0.05) / (lo + 0.05) });
}
return seen;
"""


# The tab's visibility changes, and the start of every GET /api/pipeline (performance.now() ms).
RECORD_VISIBILITY = """
performance.setResourceTimingBufferSize(100000);
window.visibilityChanges = [];
document.addEventListener("visibilitychange",
  () => window.visibilityChanges.push([document.visibilityState, performance.now()]));
"""
VISIBILITY_AND_POLLS = """
const hidden = window.visibilityChanges.find(([state]) => state === "hidden");
const shown = window.visibilityChanges
  .find(([state, at]) => state === "visible" && hidden && at > hidden[1]);
const polls = performance.getEntriesByType("resource")
  .filter((entry) => new URL(entry.name).pathname === "/api/pipeline")
  .map((entry) => entry.startTime);
return [[hidden ? hidden[1] : null, shown ? shown[1] : null], polls];
"""


class Screens:
    """Numbered PNG screenshots of the page's states under the test's tmp_path."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.paths: list[Path] = []

    def save(self, browser: Browser, name: str, subject: Any | None = None) -> None:
        """Save the viewport, scrolled to ``subject`` (an element or an element's id) if given."""
        if subject is not None:
            element = (
                browser.driver.find_element(By.ID, subject) if isinstance(subject, str) else subject
            )
            browser.script("arguments[0].scrollIntoView({block: 'start'});", element)
        path = self.directory / f"{len(self.paths) + 1:02d}-{name}.png"
        assert browser.driver.save_screenshot(str(path)), path
        self.paths.append(path)
        print(f"screenshot: {path}")


def low_contrast(browser: Browser) -> list[str]:
    """The texts of the page now shown under 4.5:1 (WCAG AA for normal text), one line each."""
    texts = browser.script(CONTRAST_SCRIPT)
    assert len(texts) > 50, texts  # the check saw the page, not an empty one

    def rgb(colour: dict[str, float]) -> str:
        return "#" + "".join(f"{round(colour[c]):02x}" for c in "rgb")

    return sorted(
        {
            f"{text['ratio']:.2f}: {text['tag']}.{text['cls']} {text['text']!r} "
            f"{rgb(text['color'])} on {rgb(text['background'])}"
            for text in texts
            if text["ratio"] < 4.5
        }
    )


def wait_until(browser: Browser, what: str, check: Any, timeout: float = LIVE) -> Any:
    """Poll a condition on the page (Selenium's WebDriverWait) with a message that says what."""
    return WebDriverWait(browser.driver, timeout, poll_frequency=0.2).until(
        lambda driver: check(), message=what
    )


def number(text: str) -> float:
    return float(re.sub(r"[^\d.]", "", text.split()[0]) or "nan")


def recent_uids(browser: Browser) -> list[str]:
    return [
        link.text
        for link in browser.driver.find_elements(By.CSS_SELECTOR, "#recent-list a.order-link")
    ]


def operator_flow(
    worker: Worker,
    profile: Path,
    browsers: list[Browser],
    screens: Screens,
    produce: Any,
    send_bad: Any,
) -> dict[str, str]:
    """Everything an operator does on the page, in order (blocking: Selenium's API).
    Returns what the Replay reported, for the test to check in Kafka."""
    page = Browser(profile)
    browsers.append(page)
    driver = page.driver
    driver.get(f"{worker.url}/")

    # The panels got 401: the page asks for the token, with the keyboard on its field.
    page.wait_visible("token-form")
    page.wait_text("status", "needs an access token")
    page.wait_text("pipeline-state", "needs an access token")
    assert driver.switch_to.active_element.get_attribute("id") == "token-input"
    screens.save(page, "token-asked")
    driver.switch_to.active_element.send_keys(TOKEN, Keys.ENTER)
    page.wait_text("pipeline-state", "Live", timeout=LIVE)
    assert not page.shown("token-form")
    page.wait_text("recent-list", MODEL_UID, timeout=LIVE)
    wait_until(page, "the group ready", lambda: page.text("group-ready") == "yes")
    assert page.driver.find_elements(By.CSS_SELECTOR, "#partitions tr[data-partition]"), page.text(
        "partitions"
    )
    assert worker.url in page.text("workers")
    assert "postgresql" in page.text("workers")
    screens.save(page, "pipeline", "pipeline")

    # Type an id: the order renders, with its source (cache or db) and the time it took.
    field = driver.find_element(By.ID, "order-id")
    field.clear()
    field.send_keys(MODEL_UID, Keys.ENTER)
    page.wait_text("result", "Test Testov")
    source = driver.find_element(By.CSS_SELECTOR, "#result .pill.source")
    assert source.get_attribute("data-source") in ("cache", "db"), source.text
    badge = driver.find_element(By.CSS_SELECTOR, "#result .badge").text
    assert re.search(r"server [\d.]+ ms", badge) and re.search(r"round trip [\d.]+ ms", badge), (
        badge
    )
    assert driver.current_url.endswith(f"#order={MODEL_UID}")
    screens.save(page, "lookup", "lookup")

    # An unknown id: a clear message, no order.
    field.clear()
    field.send_keys("no-such-order-42", Keys.ENTER)
    page.wait_text("status", "Order no-such-order-42 not found")
    assert not page.shown("result")
    screens.save(page, "unknown-order", "lookup")

    # Producing moves the live counters, and the new orders come first among the recent ones.
    consumed_before = number(page.text("total-consumed"))
    produced = produce(NEW_ORDERS)
    rates_seen: set[str] = set()

    def counted() -> bool:
        rates_seen.add(page.text("rate-consumed"))
        return all(
            number(page.text(total)) >= consumed_before + NEW_ORDERS
            for total in ("total-consumed", "total-stored")
        )

    wait_until(page, f"{NEW_ORDERS} more consumed and stored on the panel", counted)
    wait_until(
        page,
        "a consumed rate above 0/s",
        lambda: (
            rates_seen.add(page.text("rate-consumed"))
            or any(number(rate) > 0 for rate in rates_seen)
        ),
    )
    wait_until(
        page,
        "the new orders among the recent ones",
        lambda: (uids := recent_uids(page)) and set(uids) <= set(produced),
    )
    screens.save(page, "live-counters", "pipeline")

    # A recent order's link opens its lookup: with the keyboard here ...
    link = driver.find_element(By.CSS_SELECTOR, "#recent-list a.order-link")
    uid = link.text
    href = link.get_attribute("href")
    assert href.endswith(f"#order={uid}"), href
    link.send_keys(Keys.ENTER)
    page.wait_text("result", uid)
    assert driver.current_url.endswith(f"#order={uid}")
    assert driver.find_element(By.ID, "order-id").get_attribute("value") == uid
    screens.save(page, "recent-order-opened", "lookup")
    # ... and in a new tab, which asks for its own token first (the token is kept per tab).
    page.script(RECORD_VISIBILITY)
    first_tab = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.get(href)
    page.wait_visible("token-form")
    driver.switch_to.active_element.send_keys(TOKEN, Keys.ENTER)
    page.wait_text("result", uid)
    # Two polls of its own, so the first tab has been hidden for longer than a poll's interval.
    page.wait_text("pipeline-state", "Live", timeout=LIVE)
    first_poll = page.text("pipeline-state")
    wait_until(page, "the new tab's next poll", lambda: page.text("pipeline-state") != first_poll)
    driver.close()
    driver.switch_to.window(first_tab)
    # The hidden tab did not poll; shown again, it polls at once.
    (hidden_at, shown_at), started = page.script(VISIBILITY_AND_POLLS)
    assert shown_at - hidden_at > 2000, (hidden_at, shown_at)
    # (50 ms either side: a request in flight as it hid; the page's own listener runs first)
    assert not [t for t in started if hidden_at + 50 < t < shown_at - 50], (
        hidden_at,
        shown_at,
        started,
    )
    wait_until(
        page,
        "polling again once shown",
        lambda: any(t >= shown_at - 50 for t in page.script(VISIBILITY_AND_POLLS)[1]),
        timeout=5,
    )

    # A bad message appears among the dead letters, as text.
    source_offset = send_bad()
    row_selector = "#dead-letters-list [data-offset]"

    def bad_row() -> Any:
        for row in driver.find_elements(By.CSS_SELECTOR, row_selector):
            if "not json <b" in row.text and "replayed from" not in row.text:
                return row
        return None

    row = wait_until(page, "the bad message among the dead letters", bad_row)
    key = row.get_attribute("data-offset")
    assert "not_json" in row.text and f"{worker.env['KAFKA_TOPIC']} " in row.text, row.text
    assert f":{source_offset}" in row.text, (source_offset, row.text)
    assert '<b id="injected">bold</b>' in row.text  # the markup shown, not parsed
    assert page.script("return document.querySelectorAll('#injected, #injected-img').length") == 0
    screens.save(page, "dead-letter", "dead-letters")

    # Select it with the keyboard and Replay the selection.
    box = row.find_element(By.CSS_SELECTOR, "input.pick")
    box.send_keys(Keys.SPACE)
    replay = driver.find_element(By.ID, "replay-selected")
    wait_until(
        page,
        "the Replay button counting the selection",
        lambda: replay.text == "Replay 1 selected" and replay.is_enabled(),
    )
    replay.send_keys(Keys.ENTER)
    page.wait_text("replay-result", "Replayed 1 dead letter")
    report = page.text("replay-result")
    moved = re.search(rf"{re.escape(key)} → (\S+) partition (\d+) offset (\d+)", report)
    assert moved, report
    assert moved[1] == worker.env["KAFKA_TOPIC"], report
    # Still bad, so it comes back to the DLQ, marked as replayed from the letter we chose.
    wait_until(
        page,
        "the replayed letter back in the DLQ list",
        lambda: any(
            re.search(rf"replayed from \S+:{re.escape(key)}\b", row.text)
            for row in driver.find_elements(By.CSS_SELECTOR, row_selector)
        ),
    )
    screens.save(page, "replayed", "dead-letters")

    # Every text is readable: 4.5:1 or more, here with an order, the panels and dead letters.
    field.clear()
    field.send_keys(MODEL_UID, Keys.ENTER)
    page.wait_text("result", "Test Testov")
    assert not low_contrast(page), "\n".join(low_contrast(page))
    # At a phone's width the page does not scroll sideways (wide tables scroll in their box).
    driver.set_window_size(390, 844)
    wait_until(
        page,
        "no sideways scroll at 390 px",
        lambda: page.script("return document.documentElement.scrollWidth <= window.innerWidth"),
    )
    assert not low_contrast(page), "\n".join(low_contrast(page))
    screens.save(page, "phone", "pipeline")
    driver.set_window_size(1280, 900)

    # The worker goes away: the panel says so and keeps the last figures.
    worker.stop()
    page.wait_text("pipeline-state", "cannot reach the service", timeout=LIVE)
    assert page.text("total-consumed") != "—"
    screens.save(page, "worker-gone", "pipeline")

    page.collect_console()
    assert not csp_violations(page.console), page.console
    return {"topic": moved[1], "partition": moved[2], "offset": moved[3], "from": key}


async def test_operator_view(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    model_json: bytes,
    kafka_brokers: str,
    tmp_path: Path,
    browsers: list[Browser],
) -> None:
    worker = await start_worker(API_TOKENS=TOKEN)
    topic = pipeline_env["KAFKA_TOPIC"]
    await producer.send_and_wait(topic, model_json, key=MODEL_UID.encode())

    async def stored() -> bool:
        async with http.get(f"{worker.url}/order/{MODEL_UID}", headers=AUTH) as reply:
            return reply.status == 200

    await eventually(stored, what="model.json served")
    loop = asyncio.get_running_loop()

    def produce(count: int) -> list[str]:
        """Publish ``count`` valid orders as `faust -A orderstream produce` does; their ids."""

        async def send() -> list[str]:
            orders = list(random_orders(None, count))
            for order in orders:
                await producer.send(topic, encode_order(order), key=order.order_uid.encode())
            await producer.flush()
            return [order.order_uid for order in orders]

        return asyncio.run_coroutine_threadsafe(send(), loop).result(30)

    def send_bad() -> int:
        """Publish the bad message; its offset in the orders topic."""
        sent = asyncio.run_coroutine_threadsafe(producer.send_and_wait(topic, BAD_MESSAGE), loop)
        return int(sent.result(30).offset)

    screens = Screens(tmp_path / "screens")
    replayed = await asyncio.to_thread(
        operator_flow, worker, tmp_path / "profile", browsers, screens, produce, send_bad
    )

    # Replay republished the dead letter unchanged where the page said, with its origin.
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_brokers, enable_auto_commit=False)
    await consumer.start()
    try:
        where = TopicPartition(replayed["topic"], int(replayed["partition"]))
        consumer.assign([where])
        consumer.seek(where, int(replayed["offset"]))
        message = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert message.value == BAD_MESSAGE
    headers = {name: value.decode() for name, value in message.headers}
    assert headers.get("x-replayed-from", "").endswith(f":{replayed['from']}"), headers
    assert TOKEN not in worker.log()
    assert len(screens.paths) == 10 and all(path.stat().st_size > 0 for path in screens.paths)


def docs_flow(url: str, profile: Path, browsers: list[Browser], screens: Screens) -> None:
    page = Browser(profile)
    browsers.append(page)
    driver = page.driver
    driver.get(f"{url}/")
    driver.find_element(By.CSS_SELECTOR, ".top-nav a[href='/docs']").click()
    wait_until(
        page,
        "swagger-ui rendering the operations",
        lambda: driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"),
    )
    paths = {
        element.get_attribute("data-path")
        for element in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    documented = set(yaml.safe_load((REPO_ROOT / "openapi.yaml").read_text())["paths"])
    assert paths == documented, paths ^ documented
    assert (
        "One order, from the cache when it has it" in driver.find_element(By.ID, "swagger-ui").text
    )
    assert not low_contrast(page), "\n".join(
        low_contrast(page)
    )  # swagger-ui's colours, darkened in docs.css
    screens.save(page, "docs")

    # "Try it out" calls this worker (not the server openapi.yaml names) within connect-src 'self'.
    health = driver.find_element(By.ID, "operations-default-getHealth")
    health.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait_until(page, "Try it out", lambda: health.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    health.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    wait_until(page, "Execute", lambda: health.find_elements(By.CSS_SELECTOR, ".execute"))
    health.find_element(By.CSS_SELECTOR, ".execute").click()
    wait_until(
        page,
        "the live answer",
        lambda: '"status": "ok"' in health.text or '"status":"ok"' in health.text,
    )
    assert not low_contrast(page), "\n".join(low_contrast(page))
    screens.save(page, "docs-try-it-out", health)

    # Nothing came from anywhere else, and the CSP refused nothing.
    origins = page.script("""return performance.getEntriesByType("resource")
        .map((entry) => new URL(entry.name).origin);""")
    assert set(origins) <= {url}, origins
    page.collect_console()
    assert not csp_violations(page.console), page.console
    assert not [line for line in page.console if "SEVERE" in line], page.console


async def test_docs_renders_the_api_reference(
    start_worker: Any, tmp_path: Path, browsers: list[Browser]
) -> None:
    worker = await start_worker()
    screens = Screens(tmp_path / "screens")
    await asyncio.to_thread(docs_flow, worker.url, tmp_path / "profile", browsers, screens)
    assert len(screens.paths) == 2
