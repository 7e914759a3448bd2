"""A real browser (Debian's headless Chromium through Selenium) takes the study with keyboard and mouse.

Skipped, with the reason printed, only when the browser or its driver is not installed (``.ci/run`` installs
``chromium`` and ``chromium-driver``). Set ``HUMAN_STUDY_SCREENSHOT=docs/images/human_study_rating.png`` to
refresh the documentation's screenshot of the rating page.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from human_study_helpers import server_thread, synthetic_study

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
RATINGS, PAIRS = 10, 2


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[object]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    if missing:
        reason = (f"headless browser test skipped: {', '.join(missing)} not installed "
                  "(apt-get install chromium chromium-driver)")
        print(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                     f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,760"):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


def test_a_rater_takes_the_study_in_chromium_with_keyboard_and_mouse(driver: object, tmp_path: Path,
                                                                      fashion_catalogue: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as condition
    from selenium.webdriver.support.ui import WebDriverWait

    study = synthetic_study(tmp_path / "study", per_variant=4, controls=4, catalogue=fashion_catalogue, size=48,
                            ratings_per_rater=RATINGS, pairs_per_rater=PAIRS, display_px=320)
    wait = WebDriverWait(driver, 15)
    expected: dict[int, tuple] = {}
    with server_thread(study) as url:
        driver.get(url + "/")
        driver.find_element(By.ID, "agree").click()
        driver.find_element(By.ID, "start").click()
        for number in range(RATINGS):
            form = wait.until(condition.presence_of_element_located((By.ID, "answer-form")))
            assert driver.find_element(By.ID, "progress").text == f"Design {number + 1} of {RATINGS}"
            assignment = int(driver.find_element(By.NAME, "assignment").get_attribute("value"))
            likability, novelty = number % 5 + 1, (number + 2) % 5 + 1
            origin = "human" if number % 3 else "computer"
            if number % 2 == 0:  # keyboard: 1-5 for the highlighted question, H or C, Enter
                ActionChains(driver).send_keys(str(likability)).send_keys(str(novelty)).send_keys(
                    origin[0]).perform()
                if number == 2:
                    screenshot = tmp_path / "rating.png"
                    driver.save_screenshot(str(screenshot))
                    if os.environ.get("HUMAN_STUDY_SCREENSHOT"):
                        shutil.copyfile(screenshot, os.environ["HUMAN_STUDY_SCREENSHOT"])
                ActionChains(driver).send_keys(Keys.ENTER).perform()
            else:  # mouse: click the choices' labels, then Next
                for name, value in (("likability", likability), ("novelty", novelty), ("origin", origin)):
                    driver.find_element(By.CSS_SELECTOR, f'input[name="{name}"][value="{value}"]').find_element(
                        By.XPATH, "..").click()
                driver.find_element(By.ID, "next").click()
            wait.until(condition.staleness_of(form))
            expected[assignment] = (likability, novelty, origin)
        choices = []
        for number in range(PAIRS):
            form = wait.until(condition.presence_of_element_located((By.ID, "pair-form")))
            assignment = int(driver.find_element(By.NAME, "assignment").get_attribute("value"))
            if number == 0:
                ActionChains(driver).send_keys(Keys.ARROW_LEFT).perform()
                choices.append((assignment, "left"))
            else:
                driver.find_element(By.ID, "choose-right").click()
                choices.append((assignment, "right"))
            wait.until(condition.staleness_of(form))
        wait.until(condition.presence_of_element_located((By.ID, "done")))

    assert (tmp_path / "rating.png").read_bytes().startswith(b"\x89PNG")
    connection = sqlite3.connect(study / "study.sqlite")
    ratings = {row[0]: row[1:4] for row in connection.execute(
        "SELECT ans.assignment_id, likability, novelty, origin, client_ms FROM answers ans "
        "JOIN assignments a ON a.id = ans.assignment_id WHERE a.task = 'rate'")}
    pairs = {row[0]: row[1:] for row in connection.execute(
        "SELECT ans.assignment_id, ans.preferred, a.item_a, a.item_b FROM answers ans "
        "JOIN assignments a ON a.id = ans.assignment_id WHERE a.task = 'pair'")}
    timed = connection.execute("SELECT COUNT(*) FROM answers WHERE client_ms > 0").fetchone()[0]
    raters = connection.execute("SELECT COUNT(*) FROM raters").fetchone()[0]
    connection.close()
    assert ratings == expected  # exactly these ten ratings, with the values typed and clicked
    assert {assignment: (preferred == item_a and "left") or (preferred == item_b and "right")
            for assignment, (preferred, item_a, item_b) in pairs.items()} == dict(choices)
    assert raters == 1 and timed == RATINGS + PAIRS  # the page's own response times came along
