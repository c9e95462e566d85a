"""Browser fixtures shared by the page tests: one Debian chromium per module, a fresh context per test."""

import pytest

from .browser import launch_browser


@pytest.fixture(scope="module")
def browser():
    playwright, browser = launch_browser()
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    yield page
    context.close()
