"""Scrape-time metrics of the update state: the result and time of the last update run, read from
state.json by the master's metrics server (the versions themselves are imss_pattern_version_info)."""

from __future__ import annotations

import calendar
import time

from .layout import read_state

RESULTS = ("success", "failure")


def _epoch(text) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


class UpdateResultCollector:
    """imss_pattern_update_last_result{result} (1 for the last run's result, 0 for the other) and
    imss_pattern_update_last_run_timestamp_seconds."""

    def __init__(self, patterns_dir: str):
        self.patterns_dir = patterns_dir

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        last = read_state(self.patterns_dir).get("last_update") or {}
        result = GaugeMetricFamily("imss_pattern_update_last_result",
                                   "Result of the last pattern update run (1 = this result)", labels=["result"])
        when = GaugeMetricFamily("imss_pattern_update_last_run_timestamp_seconds",
                                 "When the last pattern update ran (Unix time)")
        if last.get("result") in RESULTS:
            for name in RESULTS:
                result.add_metric([name], 1.0 if last["result"] == name else 0.0)
            stamp = _epoch(last.get("time"))
            if stamp is not None:
                when.add_metric([], stamp)
        yield result
        yield when
