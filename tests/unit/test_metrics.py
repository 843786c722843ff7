"""Metrics: the pure pieces (sender counter deltas, listen parsing) and the shipped Grafana dashboard."""

from __future__ import annotations

import json
import os
import re

import pytest

from imss_milter import metrics
from imss_milter.settings import Settings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARD = os.path.join(REPO, "contrib", "grafana", "imss-milter.json")

PROMQL_FUNCTIONS = {"sum", "rate", "increase", "topk", "histogram_quantile", "max", "min", "avg", "by",
                    "without", "label_values", "irate", "count", "le", "on", "ignoring"}


def test_sender_deltas_count_only_growth_since_the_last_sync():
    seen = {}
    first = metrics.sender_stat_deltas(seen, {"connections": {"accepted": 3, "dnsbl": 1},
                                              "dns_lookups": {"bl.test": {"listed": 1, "clean": 2}}})
    assert sorted(first) == sorted([(("connections", ("accepted",)), 3), (("connections", ("dnsbl",)), 1),
                                    (("dns_lookups", ("bl.test", "listed")), 1),
                                    (("dns_lookups", ("bl.test", "clean")), 2)])
    second = metrics.sender_stat_deltas(seen, {"connections": {"accepted": 5, "dnsbl": 1},
                                               "dns_lookups": {"bl.test": {"listed": 1, "clean": 2}}})
    assert second == [(("connections", ("accepted",)), 2)]
    assert metrics.sender_stat_deltas(seen, {}) == []


def test_metrics_off_means_no_prometheus_objects(tmp_path):
    built = metrics.build(Settings(metrics_listen=None), str(tmp_path / "m"))
    assert isinstance(built, metrics.NullMetrics)
    built.message("deliver", "inbound", ["r"], {"parse": 0.1})      # accepted and ignored
    assert not (tmp_path / "m").exists()


def test_listen_parsing_accepts_ipv4_and_bracketed_ipv6():
    assert metrics.parse_listen("127.0.0.1:9899") == ("127.0.0.1", 9899)
    assert metrics.parse_listen("[::1]:9899") == ("::1", 9899)


def test_prepare_wipes_old_samples(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"old")
    (directory / "keep.txt").write_text("not ours")
    saved = os.environ.get(metrics.MULTIPROC_ENV)
    try:
        metrics.prepare_multiprocess_dir(str(directory))
        assert not (directory / "counter_123.db").exists()
        assert (directory / "keep.txt").exists()
    finally:
        from prometheus_client import values
        if saved is None:
            os.environ.pop(metrics.MULTIPROC_ENV, None)
        else:
            os.environ[metrics.MULTIPROC_ENV] = saved
        values.ValueClass = values.get_value_class()


# -- the Grafana dashboard ------------------------------------------------------------

@pytest.fixture(scope="module")
def dashboard():
    with open(DASHBOARD) as handle:
        return json.load(handle)


def all_panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])     # panels inside collapsed rows


def metric_names_in(expr: str) -> set[str]:
    """Identifiers that look like metric names (imss_...), with histogram suffixes removed."""
    names = set()
    for name in re.findall(r"\b(imss_[a-z_]+)\b", expr):
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix) and name[: -len(suffix)] in metrics.METRIC_NAMES:
                name = name[: -len(suffix)]
        names.add(name)
    return names


def test_dashboard_is_a_grafana_json_model(dashboard):
    assert isinstance(dashboard["title"], str) and dashboard["title"]
    assert isinstance(dashboard["uid"], str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 30
    assert isinstance(dashboard["panels"], list) and dashboard["panels"]
    assert {"from", "to"} <= set(dashboard["time"])
    assert isinstance(dashboard["templating"]["list"], list)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert all(isinstance(i, int) for i in ids)
    for panel in all_panels(dashboard):
        assert panel["type"] in {"timeseries", "stat", "table", "gauge", "row", "bargauge"}
        position = panel["gridPos"]
        assert set(position) >= {"x", "y", "w", "h"}
        assert 0 <= position["x"] and position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        uid = panel["datasource"]["uid"]
        assert uid.startswith("${") and uid[2:-1] in variables


def test_dashboard_queries_use_only_metrics_we_export(dashboard):
    used = set()
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
            names = metric_names_in(expr)
            assert names, f"{panel['title']}: no imss metric in {expr!r}"
            unknown = names - set(metrics.METRIC_NAMES)
            assert not unknown, f"{panel['title']} queries metrics we do not export: {unknown}"
            used |= names
    # every SPEC §7 metric is on the dashboard
    assert used >= {"imss_messages_total", "imss_rule_hits_total", "imss_connections_total", "imss_scan_seconds",
                    "imss_engine_errors_total", "imss_dns_lookups_total", "imss_quarantine_messages",
                    "imss_pattern_version_info", "imss_messages_in_flight"}


def test_dashboard_panels_do_not_overlap(dashboard):
    cells = set()
    for panel in all_panels(dashboard):
        position = panel["gridPos"]
        for x in range(position["x"], position["x"] + position["w"]):
            for y in range(position["y"], position["y"] + position["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
