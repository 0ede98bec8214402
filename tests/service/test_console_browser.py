"""The ops console (GET /console) in a real browser: Debian's chromium, driven by selenium, against a
real `relevance serve` on loopback with real Redis and the real local teacher (SmolLM2 via llama.cpp,
in score mode so that each fresh explanation takes a second, not a minute).

One explanation is put into the real explanation cache beforehand: a rule-CoT record
(distill/teacher/bootstrap.py) with verified evidence spans, one span the parser could not verify and
a grade the student disagrees with, so that what the page must show is known exactly. The others come
from the LLM. A second server whose teacher never answers shows the timeout and the open breaker.
Screenshots go to the test's folder (and, with RELEVANCE_CONSOLE_SCREENSHOT=PATH, to PATH as well:
`make console-screenshot` writes docs/console.png that way).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from pathlib import Path

import httpx
import needs
import pytest
import redis
from service_harness import API_KEY, Server

from core.cot import CoTRecord, DimensionJudgement, EvidenceSpan
from core.item import Item
from distill.teacher.bootstrap import rule_judgements, rule_rationale
from service.explain.cache import explanation_key
from teacher import load_teacher

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.llm, pytest.mark.browser]

QUERY = "dewalt 20v cordless drill"
XSS_TITLE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> drill bit set'
ITEMS = [
    {
        "id": "drill-kit",
        "title": "DEWALT 20V MAX Cordless Drill Driver Kit",
        "attributes": {"color": "yellow"},
    },
    {"id": "xss-1", "title": XSS_TITLE},
    {"id": "towel", "title": "Blue cotton bath towel"},
]
UNVERIFIED = "DCD771C2"  # a model number the seeded record cites, but not in the item text


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = needs.CHROMIUM
    # As root in a sandbox with a closed network: no sandbox, no GPU, no background connections.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1700",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=needs.CHROMEDRIVER))
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def prefix() -> str:
    value = f"relevance-console-test-{uuid.uuid4().hex[:8]}:"
    yield value
    client = redis.Redis.from_url(needs.REDIS_URL)
    for key in client.scan_iter(f"{value}*"):
        client.delete(key)


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory, prefix):
    srv = Server(
        bundles["cross"],
        tmp_path_factory.mktemp("console") / "server.log",
        api_keys=API_KEY,
        redis_url=needs.REDIS_URL,
        redis_prefix=prefix,
        explain_mode="score",
        explain_rate_per_s=50,
        explain_rate_burst=50,
    )
    yield srv
    srv.stop()


def _wait(driver, condition, timeout_s: float = 30.0, message: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(condition, message)


def _fill(driver, element_id: str, text: str) -> None:
    # send_keys types a tab as a focus change in some fields; set textarea values by script instead.
    element = driver.find_element("id", element_id)
    driver.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'))", element, text
    )


def _open_console(driver, server: Server) -> None:
    driver.get(f"{server.url}/console")
    _wait(
        driver, lambda d: d.find_element("id", "model").text.startswith("model: tiny-"), message="model line"
    )
    _fill(driver, "api-key", API_KEY)


def _score(driver, source: str, items_text: str) -> list:
    driver.find_element("css selector", f"input[name=source][value={source}]").click()
    _fill(driver, "query", QUERY)
    _fill(driver, "items", items_text)
    old = driver.find_elements("css selector", "#ranking tbody tr")
    driver.find_element("id", "score").click()
    _wait(
        driver,
        lambda d: (rows := d.find_elements("css selector", "#ranking tbody tr")) and rows != old,
        message="ranking rows",
    )
    return driver.find_elements("css selector", "#ranking tbody tr")


def _explain(driver, item_id: str, expect_class: str, timeout_s: float = 60.0):
    row = driver.find_element("xpath", f"//table[@id='ranking']//tr[td[@class='id' and text()='{item_id}']]")
    row.find_element("css selector", "button.explain").click()
    _wait(
        driver,
        lambda d: expect_class in d.find_element("id", "exp-status").get_attribute("class").split(),
        timeout_s,
        message=f"explanation status {expect_class!r} for {item_id}",
    )
    return driver.find_element("id", "exp-status")


def _marks(driver, element_id: str) -> list[tuple[str, int, int]]:
    return [
        (m.text, int(m.get_attribute("data-start")), int(m.get_attribute("data-end")))
        for m in driver.find_elements("css selector", f"#{element_id} mark.ev")
    ]


def _screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), "chromium did not write a screenshot"
    assert path.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    if target := os.environ.get("RELEVANCE_CONSOLE_SCREENSHOT"):
        shutil.copyfile(path, target)
    return path


def _seed_explanation(server: Server, prefix: str, item: dict, student_grades: dict[str, float]) -> CoTRecord:
    """A rule-CoT record for (QUERY, item) in the server's explanation cache, under the key its teacher
    would use, with a grade the student does not give its top probability."""
    teacher = load_teacher("llamacpp")
    item_map = Item.model_validate(item).model_dump()
    query_text = teacher.template.query_text(QUERY)
    item_text = teacher.template.item_text(item_map)
    judgements = rule_judgements(query_text, item_text, attributes=True)
    judgements.append(
        DimensionJudgement(
            dimension="model",
            query_value="20v max",
            item_value=None,
            verdict="partial",
            evidence=[EvidenceSpan(source="item", text=UNVERIFIED, verified=False)],
        )
    )
    student_top = max(student_grades, key=student_grades.get)
    grade = next(level for level in teacher.levels if level != student_top)
    distribution = {
        level: (0.8 if level == grade else 0.2 / (len(teacher.levels) - 1)) for level in teacher.levels
    }
    record = CoTRecord(
        teacher_id=teacher.teacher_id,
        prompt_version=teacher.prompt_version,
        pair_id="console-test",
        query=query_text,
        item_id=item["id"],
        item_text=item_text,
        dimensions=judgements,
        grade=grade,
        grade_levels=teacher.levels,
        grade_distribution=distribution,
        distribution_source="logits",
        rationale=rule_rationale(judgements[:-1]),
    )
    key = explanation_key(teacher.teacher_id, teacher.prompt_version, QUERY, item_map)
    redis.Redis.from_url(needs.REDIS_URL).set(f"{prefix}explain:{key}", record.model_dump_json(), ex=3600)
    return record


def test_console_ranks_explains_highlights_and_escapes(driver, server, prefix, tmp_path) -> None:
    scored = httpx.post(f"{server.url}/score", json={"query": QUERY, "items": ITEMS}, timeout=30).json()[
        "scores"
    ]
    by_id = {s["id"]: s for s in scored}
    record = _seed_explanation(server, prefix, ITEMS[0], by_id["drill-kit"]["grades"])

    _open_console(driver, server)
    # Pasted as JSON, so that the first item keeps its attributes (the seeded key depends on them);
    # the line format is used by the other test.
    rows = _score(driver, "paste", json.dumps(ITEMS))
    # Ranked best first, the student's scores as /score gives them.
    shown = [
        (r.find_element("css selector", "td.id").text, float(r.find_element("css selector", "td.score").text))
        for r in rows
    ]
    expected = sorted(((s["id"], round(s["score"], 3)) for s in scored), key=lambda p: -p[1])
    assert shown == expected
    timing = driver.find_element("id", "timing").text
    for part in ("tokenise", "queue", "infer", "total", "round trip"):
        assert part in timing, timing

    # The attacker's title is text: shown verbatim, no element made of it, nothing ran.
    xss_row = next(r for r in rows if r.find_element("css selector", "td.id").text == "xss-1")
    assert xss_row.find_element("css selector", "td.title").text == XSS_TITLE
    assert driver.find_elements("css selector", "#ranking tbody script, #ranking tbody img") == []
    assert driver.execute_script("return window.__pwned") is None

    # The seeded explanation: from the cache, evidence highlighted where the record says.
    status = _explain(driver, "drill-kit", "cached")
    assert "explanation cache" in status.text
    verified = [
        (ev.source, ev.text, ev.start, ev.end)
        for dim in record.dimensions
        for ev in dim.evidence
        if ev.verified
    ]
    item_spans = sorted((t, s, e) for src, t, s, e in verified if src == "item")
    query_spans = sorted((t, s, e) for src, t, s, e in verified if src == "query")
    assert item_spans and query_spans, "the rule CoT cited no evidence: the highlight check would be empty"
    assert sorted(_marks(driver, "exp-item")) == item_spans
    assert sorted(_marks(driver, "exp-query")) == query_spans
    for text, start, end in item_spans:
        assert record.item_text[start:end] == text
    unverified = driver.find_elements("css selector", "#exp-unverified-list li.unverified")
    assert [li.find_element("css selector", "q").text for li in unverified] == [UNVERIFIED]
    assert "unverified" in unverified[0].text
    # One table row per dimension, in the record's order, with its verdict.
    dim_rows = driver.find_elements("css selector", "#exp-dimensions tbody tr")
    assert [
        (r.get_attribute("data-dimension"), r.find_element("css selector", "td.verdict").text)
        for r in dim_rows
    ] == [(d.dimension, d.verdict) for d in record.dimensions]
    # Teacher and student distributions side by side, and the disagreement flagged.
    grade_rows = {
        r.get_attribute("data-level"): (
            r.find_element("css selector", "td.teacher").text,
            r.find_element("css selector", "td.student").text,
        )
        for r in driver.find_elements("css selector", "#exp-grades tbody tr")
    }
    student = by_id["drill-kit"]["grades"]
    assert grade_rows == {
        level: (f"{record.grade_distribution[level]:.2f}", f"{student[level]:.2f}")
        for level in record.grade_levels
    }
    disagree = driver.find_element("id", "exp-disagree")
    assert disagree.is_displayed() and record.grade in disagree.text
    assert max(student, key=student.get) in disagree.text
    _screenshot(driver, tmp_path, "console-explanation.png")

    # A fresh explanation from the real LLM (score mode: a grade, no reasoning), then the cached copy.
    status = _explain(driver, "towel", "fresh")
    assert "Fresh from the teacher" in status.text
    assert "score mode" in driver.find_element("id", "exp-no-dimensions").text
    assert "llamacpp:" in driver.find_element("id", "exp-timing").text
    assert "cached" in _explain(driver, "towel", "cached").get_attribute("class")

    # The attacker's title in the explanation panel: text again.
    _explain(driver, "xss-1", "fresh")
    assert XSS_TITLE in driver.find_element("id", "exp-item").text
    assert driver.find_elements("css selector", "#exp-item script, #exp-item img") == []
    assert driver.execute_script("return window.__pwned") is None

    # By id: the items POST /score stored; an unknown id is reported, not silently dropped.
    rows = _score(driver, "ids", "towel\nno-such-item\ndrill-kit")
    assert sorted(r.find_element("css selector", "td.id").text for r in rows) == ["drill-kit", "towel"]
    note = driver.find_element("id", "lookup-note")
    assert note.is_displayed() and "no-such-item" in note.text

    # Leave the page on the seeded explanation for the screenshot the docs show.
    _explain(driver, "drill-kit", "cached")
    _screenshot(driver, tmp_path, "console.png")


def test_console_states_teacher_timeout_and_open_breaker(driver, bundles, tmp_path, prefix) -> None:
    # A teacher endpoint that accepts connections and never answers (a hung LLM server).
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        port = hung.getsockname()[1]
        server = Server(
            bundles["cross"],
            tmp_path / "server.log",
            api_keys=API_KEY,
            redis_url=needs.REDIS_URL,
            redis_prefix=f"{prefix}hung:",
            explain_teacher=f"openai:hung@http://127.0.0.1:{port}/v1",
            explain_timeout_s=1,
            explain_breaker_failures=1,
            explain_breaker_reset_s=60,
        )
        try:
            _open_console(driver, server)
            _score(driver, "paste", "towel | Blue cotton bath towel")
            status = _explain(driver, "towel", "explain_timeout", timeout_s=20)
            assert status.text.startswith("The teacher timed out")
            status = _explain(driver, "towel", "breaker_open", timeout_s=20)
            assert status.text.startswith("The teacher's circuit breaker is open")
            assert "(Retry-After: " in status.text
            assert not driver.find_element("id", "exp-body").is_displayed()
            _screenshot(driver, tmp_path, "console-breaker-open.png")
        finally:
            server.stop()
