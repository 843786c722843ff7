"""imss_scan_seconds has a stage per engine that ran (engines run inside policy evaluation, so "policy"
is what is left), and imss_engine_errors_total{engine} counts the exceptions engines raise."""

from __future__ import annotations

import time
from email.message import EmailMessage

import pytest
from prometheus_client import CollectorRegistry

from imss_milter.metrics import Metrics
from imss_milter.policy.types import Envelope
from tests.helpers.runtime import runtime_for

ENGINE_SECONDS = 0.06
RULES = """\
policies:
  - name: viruses
    when: {virus: true}
    actions: [reject]
  - name: spyware-only
    when: {virus: [spyware]}
    actions: [reject]
  - name: secrets-out
    when: {dlp: [secrets]}
    actions: [{quarantine: {area: dlp}}]
"""


class SlowEngine:
    """An antivirus stand-in that takes a known time per check, or fails."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.checks = 0

    def check(self, condition, argument, model, envelope, scratch):
        self.checks += 1
        time.sleep(ENGINE_SECONDS)
        if self.fail:
            raise RuntimeError("scanner daemon went away")
        return []


@pytest.fixture
def runtime(tmp_path):
    runtime = runtime_for(tmp_path, {"50.yaml": RULES}, sender_filter=False)
    runtime.registry = CollectorRegistry()
    runtime.metrics = Metrics(registry=runtime.registry)
    return runtime


def message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.com"
    msg["Subject"] = "hello"
    msg.set_content("Nothing secret here.\n" * 50)
    return msg.as_bytes()


ENVELOPE = Envelope(sender="alice@example.com", recipients=["bob@example.com"], queue_id="QT1")


def sample(runtime, name: str, **labels) -> float | None:
    return runtime.registry.get_sample_value(name, labels)


def test_each_engine_is_a_stage_and_policy_time_excludes_engine_time(runtime):
    engine = SlowEngine()
    runtime.engines["antivirus"] = engine
    result = runtime.scan(message(), ENVELOPE)
    assert result.verdict.action == "deliver"
    assert engine.checks == 2       # two policies, two different arguments
    assert set(result.timings) == {"parse", "policy", "antivirus", "dlp"}
    assert result.timings["antivirus"] >= 2 * ENGINE_SECONDS
    assert 0 < result.timings["dlp"] < ENGINE_SECONDS
    # the antivirus sleeps happened inside policy evaluation, but are not counted as policy time
    assert 0 <= result.timings["policy"] < ENGINE_SECONDS

    runtime.record(ENVELOPE, result, "deliver", 0.2, size=100)
    for stage in ("parse", "policy", "antivirus", "dlp"):
        assert sample(runtime, "imss_scan_seconds_count", stage=stage) == 1.0, stage
    assert sample(runtime, "imss_scan_seconds_sum", stage="antivirus") >= 2 * ENGINE_SECONDS
    assert sample(runtime, "imss_scan_seconds_sum", stage="policy") < ENGINE_SECONDS
    assert sample(runtime, "imss_engine_errors_total", engine="antivirus") is None


def test_an_engine_that_is_never_asked_is_no_stage(runtime):
    runtime.engines["antivirus"] = SlowEngine()
    runtime.reload([("/r/50.yaml", "policies: [{name: p, when: {subject: {keywords: [x]}}, actions: [reject]}]")])
    result = runtime.scan(message(), ENVELOPE)
    assert set(result.timings) == {"parse", "policy"}


def test_engine_exceptions_are_counted_by_engine_and_still_raised(runtime):
    runtime.engines["antivirus"] = SlowEngine(fail=True)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="went away"):
            runtime.scan(message(), ENVELOPE)
    assert sample(runtime, "imss_engine_errors_total", engine="antivirus") == 2.0
    assert sample(runtime, "imss_engine_errors_total", engine="dlp") is None


def test_batched_metrics_match_immediate_ones_after_flush():
    """Workers batch per-message samples; after flush() the registry holds what immediate writes give."""
    from prometheus_client import CollectorRegistry

    from imss_milter.metrics import Metrics
    immediate, batched = CollectorRegistry(), CollectorRegistry()
    direct, later = Metrics(registry=immediate), Metrics(registry=batched)
    later.start_batching()
    samples = [("deliver", "inbound", ["a"], {"parse": 0.001, "policy": 0.0002}),
               ("quarantine", "inbound", ["a", "b"], {"parse": 0.3, "policy": 0.02, "dlp": 7.0}),
               ("deliver", "outbound", [], {"parse": 0.004})]
    for verdict, direction, rules, timings in samples * 5:
        direct.message(verdict, direction, rules, timings)
        later.message(verdict, direction, rules, timings)
    assert later.messages.labels(verdict="deliver", direction="inbound")._value.get() == 0   # not yet written
    later.flush()

    def samples_of(registry):
        return sorted((s.name, tuple(sorted(s.labels.items())), round(s.value, 9))
                      for family in registry.collect() for s in family.samples if not s.name.endswith("_created"))
    assert samples_of(batched) == samples_of(immediate)


def test_engines_are_wrapped_once_per_rule_set_and_rewrapped_when_they_change(runtime):
    """Runtime.scan keeps a rule set's timed engines between messages; a new rule set (reload) or a
    changed engine of the runtime's own (sender_reputation comes and goes) is picked up at once,
    and each message's timings and metrics stay its own."""
    first = SlowEngine()
    runtime.engines["antivirus"] = first
    one = runtime.scan(message(), ENVELOPE)
    two = runtime.scan(message(), ENVELOPE)
    assert first.checks == 4
    assert one.timings is not two.timings and two.timings["antivirus"] >= 2 * ENGINE_SECONDS
    second = SlowEngine(fail=True)
    runtime.engines["antivirus"] = second
    with pytest.raises(RuntimeError, match="went away"):
        runtime.scan(message(), ENVELOPE)
    assert first.checks == 4 and second.checks == 1
    assert sample(runtime, "imss_engine_errors_total", engine="antivirus") == 1.0
    runtime.engines["antivirus"] = first
    runtime.reload([("/r/50.yaml", RULES.replace("spyware-only", "spyware-first"))])
    assert runtime.scan(message(), ENVELOPE).verdict.action == "deliver"
    assert first.checks == 6
