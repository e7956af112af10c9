"""Layout checks the browser tests share: does a page fit a phone's width."""

from __future__ import annotations

from playwright.sync_api import Page

# The elements sticking out past the viewport's right edge, to say what overflows.
_STICKING_OUT = """() => [...document.querySelectorAll("body *")]
  .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
  .slice(0, 10)
  .map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`)"""


def assert_fits_the_screen(page: Page) -> None:
    """No horizontal page overflow: wide tables scroll inside their own box instead."""
    width, screen = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= screen, (
        f"page {width} px wide on a {screen} px screen: {page.evaluate(_STICKING_OUT)}"
    )
