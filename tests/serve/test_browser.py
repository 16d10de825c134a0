"""A real browser: headless Chromium (Debian's, driven through Debian's chromedriver) loads
the overview, a ranking and a neuron page, clicks from the ranking to a neuron, runs a query
in the console, and finds no error in the JavaScript console (CSP violations included)."""

from __future__ import annotations

import pytest

from neurondb.serve import create_app
from neurondb.store import open_store

from .live import chrome, live_server, missing_browser

pytestmark = pytest.mark.skipif(missing_browser() is not None,
                                reason=missing_browser() or "")


def severe(driver) -> list[dict]:
    """Console entries of level SEVERE or WARNING (CSP reports are SEVERE)."""
    return [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")]


@pytest.fixture(scope="module")
def site(full_store):
    st = open_store(full_store.root)
    try:
        with live_server(create_app(st)) as url, chrome() as driver:
            yield url, driver
    finally:
        st.close()


def test_overview_ranking_neuron_and_console(site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    url, d = site
    wait = WebDriverWait(d, 20)
    d.get(url + "/")
    assert "tiny-bert" in d.title
    assert d.find_element(By.ID, "runs").is_displayed()
    d.find_element(By.LINK_TEXT, "skill").click()
    wait.until(EC.presence_of_element_located((By.ID, "ranking")))
    assert d.current_url.endswith("/rankings/skill")
    header = d.find_element(By.LINK_TEXT, "layer")
    header.click()  # sort by layer
    wait.until(EC.url_contains("sort=layer"))
    link = d.find_element(By.CSS_SELECTOR, "#ranking tbody tr a")
    target = link.get_attribute("href")
    link.click()
    wait.until(EC.presence_of_element_located((By.ID, "top-examples")))
    assert d.current_url == target and "/neurons/encoder/" in target
    assert d.find_elements(By.CSS_SELECTOR, "#top-examples .ex")
    assert d.find_element(By.CSS_SELECTOR, "#top-examples .peak").is_displayed()
    d.get(url + "/neurons/encoder/1/5")
    peak = d.find_element(By.CSS_SELECTOR, "#top-examples .ex .peak")
    assert peak.text == "great"
    assert d.find_elements(By.CSS_SELECTOR, "svg.fig rect")  # the histogram drew
    # hostile texts are text, not markup: no <script> or <img> inside the examples
    assert not d.find_elements(By.CSS_SELECTOR, "#top-examples script, #top-examples img")
    d.get(url + "/")
    form = d.find_element(By.CSS_SELECTOR, "form.jump")
    for name, value in (("layer", "0"), ("neuron", "3")):
        box = form.find_element(By.NAME, name)
        box.clear()
        box.send_keys(value)
    form.find_element(By.TAG_NAME, "button").click()
    wait.until(EC.url_contains("/neurons/encoder/0/3"))
    d.get(url + "/sql")
    box = d.find_element(By.ID, "sql-q")
    box.clear()
    box.send_keys("SELECT label, count(*) AS n FROM examples WHERE run = 'ev' "
                  "GROUP BY label ORDER BY label")
    d.find_element(By.ID, "sql-run").click()
    wait.until(EC.presence_of_element_located((By.ID, "sql-result")))
    cells = [c.text for c in d.find_elements(By.CSS_SELECTOR, "#sql-result tbody td")]
    assert cells == ["0", "5", "1", "6"]
    assert d.find_element(By.ID, "sql-csv").get_attribute("href").startswith(url + "/sql.csv?q=")
    assert severe(d) == []


def test_no_console_errors_on_any_page(site):
    url, d = site
    for path in ("/", "/runs/ev", "/rankings/skill?layer=1", "/neurons/encoder/0/3",
                 "/compare?rankings=skill,random", "/sql?q=SELECT+*+FROM+rankings+LIMIT+5"):
        d.get(url + path)
        assert d.execute_script("return document.readyState") == "complete"
        assert severe(d) == [], path
