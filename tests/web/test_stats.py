"""web/js/stats.js in real Chromium: the numbers of the live panel."""

from __future__ import annotations

from playwright.sync_api import Page


def test_median_of_odd_even_and_empty_lists(module_page: Page) -> None:
    got = module_page.evaluate(
        """async () => {
          const { median } = await import("/js/stats.js");
          return [median([5, 1, 3]), median([4, 1, 3, 2]), Number.isNaN(median([]))];
        }"""
    )
    assert got == [3, 2.5, True]


def test_quantile_interpolates_between_neighbours(module_page: Page) -> None:
    got = module_page.evaluate(
        """async () => {
          const { quantile } = await import("/js/stats.js");
          return [quantile([10, 20, 30, 40, 50], 0.9), quantile([7], 0.9), quantile([3, 1, 2], 0)];
        }"""
    )
    assert got == [46, 7, 1]


def test_live_stats_rate_latency_people_drops_and_clear(module_page: Page) -> None:
    got = module_page.evaluate(
        """async () => {
          const { LiveStats } = await import("/js/stats.js");
          const stats = new LiveStats({ windowMs: 1000, latencySamples: 3 });
          const person = { label: "person" }, car = { label: "car" };
          stats.addResult({ detections: [person] }, 500, 0);  // pushed out of the 3 latency samples
          stats.addResult({ detections: [person, car] }, 40, 900);
          stats.addResult({ detections: [person, person, car] }, 60, 950);
          stats.addResult({ detections: [person, person] }, 50, 1000);
          stats.setServerStats({ dropped: 4, by_reason: { deadline: 3, superseded: 1 }, inferred: 9 });
          const before = { rate: stats.rate(1000), p50: stats.latencyP50(), people: stats.people,
                           dropped: stats.dropped, reasons: stats.dropsByReason };
          const later = stats.rate(2500);
          stats.clear();
          return { before, later, after: [stats.results, stats.dropped, Number.isNaN(stats.latencyP50())] };
        }"""
    )
    # Three results within the last second (the one at t=0 falls out of the 1 s window at t=1000).
    assert got["before"] == {
        "rate": 3,
        "p50": 50,
        "people": 2,
        "dropped": 4,
        "reasons": {"deadline": 3, "superseded": 1},
    }
    assert got["later"] == 0
    assert got["after"] == [0, 0, True]
