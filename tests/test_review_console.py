"""The reviewer console on a real PostgreSQL: no page without a login, CSRF on every form, roles enforced,
passwords kept hashed; and in a real headless browser (Debian's chromium through Selenium), a reviewer
logs in, claims with the keyboard, confirms, and the verdict arrives on moderator-decisions."""
from __future__ import annotations

import json
import re
import shutil
import threading

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from jobtest import free_port
from lifeguard.config import load_config
from lifeguard.schemas import EXAMPLES, ModeratorDecision, ReviewItem
from review.console import create_app, password_hash
from review.store import Consumed, ReviewStore
from tools import kafka_io, local

PASSWORD = "correct horse battery"


@pytest.fixture
def cfg(review_environ):
    cfg = load_config(environ=review_environ)
    store = ReviewStore.connect(cfg.review)
    for name, role in (("ana", "reviewer"), ("sam", "senior"), ("root", "admin")):
        store.add_reviewer(name, role, password_hash(PASSWORD))
    item = ReviewItem.model_validate_json(json.dumps(EXAMPLES["review-queue"]))
    store.enqueue([Consumed(item, "review-queue:0:1")])
    return cfg


@pytest.fixture
def client(cfg):
    app = create_app(cfg)
    app.config["TESTING"] = True
    return app.test_client()


def csrf_token(client, path: str = "/login") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))[1]


def log_in(client, name: str, password: str = PASSWORD):
    return client.post("/login", data={"name": name, "password": password, "csrf_token": csrf_token(client)})


@pytest.mark.parametrize("method, path", [("get", "/"), ("get", "/items/c-7f3a"), ("get", "/reviewers")])
def test_no_page_without_a_login(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")


def test_a_wrong_password_opens_nothing(client):
    assert "Unknown name or wrong password" in log_in(client, "ana", "not the password").get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_every_form_needs_its_csrf_token(client):
    assert client.post("/login", data={"name": "ana", "password": PASSWORD}).status_code == 400
    log_in(client, "ana")
    assert client.post("/claim").status_code == 400
    assert client.post("/claim", data={"csrf_token": csrf_token(client, "/")}).status_code == 302


def test_roles_guard_pages_and_actions(client, cfg):
    log_in(client, "ana")
    assert client.get("/").status_code == 200
    assert client.get("/reviewers").status_code == 403
    token = csrf_token(client, "/")
    assert client.post("/reviewers", data={"name": "mallory", "role": "admin", "password": PASSWORD,
                                           "csrf_token": token}).status_code == 403
    assert ReviewStore.connect(cfg.review).reviewer("mallory") is None
    client.post("/logout", data={"csrf_token": token})
    log_in(client, "root")
    assert "ana" in client.get("/reviewers").get_data(as_text=True)


def test_a_password_is_kept_as_a_salted_hash(cfg):
    account = ReviewStore.connect(cfg.review).reviewer("ana")
    assert PASSWORD not in account["password_hash"] and account["password_hash"].startswith("scrypt:")
    assert account["password_hash"] != ReviewStore.connect(cfg.review).reviewer("sam")["password_hash"]


@pytest.fixture
def console_url(cfg):
    server = make_server("127.0.0.1", free_port(), create_app(cfg), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()


def test_a_reviewer_claims_and_confirms_in_the_browser_and_the_verdict_reaches_kafka(cfg, console_url, browser,
                                                                                     review_consumer):
    local.create_topics(cfg)
    wait = WebDriverWait(browser, 20)
    browser.get(console_url + "/")
    wait.until(expected_conditions.presence_of_element_located((By.ID, "log-in")))
    browser.find_element(By.NAME, "name").send_keys("ana")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
    wait.until(expected_conditions.presence_of_element_located((By.ID, "claim-next")))
    browser.find_element(By.TAG_NAME, "body").send_keys("n")  # the keyboard shortcut claims
    excerpt = wait.until(expected_conditions.presence_of_element_located((By.ID, "excerpt")))
    assert excerpt.text == EXAMPLES["review-queue"]["excerpt"]
    assert browser.find_element(By.ID, "category").get_attribute("value") == "pii"
    browser.find_element(By.TAG_NAME, "body").send_keys("c")
    wait.until(expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "c-7f3a: confirm (pii)"))

    consumer = review_consumer
    for _ in range(50):
        consumer.run_round(poll_ms=200)
        if consumer.counts.verdicts_published:
            break
    assert consumer.counts.verdicts_published == 1, consumer.counts
    (record,) = kafka_io.read(cfg.kafka, [cfg.kafka.topics.moderator_decisions], until=lambda got: len(got) >= 1)
    verdict = ModeratorDecision.model_validate_json(record.value)
    assert (verdict.moderator_id, verdict.subject_event_id, verdict.verdict, verdict.category) == (
        "ana", "c-7f3a", "confirm", "pii")
