"""web/js/backoff.js in real Chromium: reconnect delays grow, cap and reset."""

from __future__ import annotations

from playwright.sync_api import Page


def test_delays_double_up_to_the_cap_and_reset_starts_over(module_page: Page) -> None:
    got = module_page.evaluate(
        """async () => {
          const { Backoff } = await import("/js/backoff.js");
          const b = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0 });
          const first = [b.next(), b.next(), b.next(), b.next(), b.next(), b.next()];
          b.reset();
          return { first, again: b.next() };
        }"""
    )
    assert got == {"first": [100, 200, 400, 800, 1000, 1000], "again": 100}


def test_jitter_stays_within_its_fraction(module_page: Page) -> None:
    got = module_page.evaluate(
        """async () => {
          const { Backoff } = await import("/js/backoff.js");
          const low = new Backoff({ initialMs: 1000, jitter: 0.2, random: () => 0 });
          const high = new Backoff({ initialMs: 1000, maxMs: 5000, jitter: 0.2, random: () => 0.999999 });
          return [low.next(), high.next()];
        }"""
    )
    assert got == [800, 1200]
