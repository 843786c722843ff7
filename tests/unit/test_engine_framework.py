"""The engine framework: engines sections checked with file:line, prepare() of the engines that
matched routes need run concurrently within each engine's timeout, and on_error per engine."""

from __future__ import annotations

import threading
import time
from email.message import EmailMessage

import pytest

from imss_milter.engines import component_dir, parse_engine_sections, validate_component
from imss_milter.errors import ConfigError
from imss_milter.policy.types import Envelope
from imss_milter.runtime import EngineTimeout, Runtime
from imss_milter.settings import load_settings
from imss_milter.yamlconf import loads_yaml
from tests.helpers.runtime import runtime_for

RULES = """\
policies:
  - name: viruses-inbound
    route: {to: ["*@example.com"]}
    when: {virus: true}
    actions: [reject]
  - name: spam-inbound
    route: {to: ["*@example.com"]}
    when: {spam: {score: ">=5"}}
    actions: [{quarantine: {area: spam}}]
  - name: urls-for-finance-only
    route: {to: ["cfo@example.com"]}
    when: {url.reputation: [phishing]}
    actions: [reject]
"""
ENVELOPE = Envelope(sender="alice@example.org", recipients=["bob@example.com"], queue_id="QF1")


class BarrierEngine:
    """prepare() waits until every other engine's prepare() is running too: only concurrency passes.
    Like clamd, rspamd or DNS lookups it waits on something (blocking), so it runs in the engine pool."""

    blocking = True

    def __init__(self, barrier: threading.Barrier, findings=(), sleep: float = 0.0, fail: Exception | None = None):
        self.barrier = barrier
        self.findings = list(findings)
        self.sleep = sleep
        self.fail = fail
        self.prepared = 0

    def prepare(self, model, envelope, scratch):
        self.prepared += 1
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail is not None:
            raise self.fail

    def check(self, condition, argument, model, envelope, scratch):
        return self.findings


class Options:
    def __init__(self, on_error="tempfail", timeout=30.0):
        self.on_error = on_error
        self.timeout = timeout


@pytest.fixture
def runtime(tmp_path):
    return runtime_for(tmp_path, {"50.yaml": RULES}, sender_filter=False)


def message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.com"
    msg["Subject"] = "hello"
    msg.set_content("hello\n")
    return msg.as_bytes()


def test_prepare_runs_concurrently_for_engines_the_matched_routes_need(runtime):
    barrier = threading.Barrier(2)
    antivirus, spam = BarrierEngine(barrier), BarrierEngine(barrier, findings=[{"detail": "score 7", "score": 7}])
    url = BarrierEngine(None)
    runtime.engines.update(antivirus=antivirus, spam=spam, url=url)
    result = runtime.scan(message(), ENVELOPE)
    # both reached the barrier together: run one after the other, the first would wait 10 s and fail
    assert antivirus.prepared == spam.prepared == 1
    assert url.prepared == 0, "no policy with a matching route asks the URL engine"
    assert result.verdict.action == "quarantine"
    assert result.verdict.rules == ["spam-inbound"]
    assert "antivirus" in result.timings and "spam" in result.timings


def test_a_prepare_that_overruns_its_timeout_fails_the_condition_that_asks(runtime):
    antivirus = BarrierEngine(None, sleep=1.0)
    antivirus.options = Options(timeout=0.2)
    runtime.engines.update(antivirus=antivirus, spam=BarrierEngine(None))
    with pytest.raises(EngineTimeout, match="antivirus"):
        runtime.scan(message(), ENVELOPE)


def test_on_error_accept_makes_the_conditions_of_a_failed_engine_not_hold(runtime, caplog):
    antivirus = BarrierEngine(None, fail=ConnectionRefusedError("clamd is down"))
    antivirus.options = Options(on_error="accept")
    runtime.engines.update(antivirus=antivirus, spam=BarrierEngine(None, findings=[{"detail": "score 9"}]))
    result = runtime.scan(message(), ENVELOPE)
    assert result.verdict.rules == ["spam-inbound"]
    assert "clamd is down" in caplog.text and "QF1" in caplog.text


def test_on_error_tempfail_raises_the_prepare_failure_when_asked(runtime):
    antivirus = BarrierEngine(None, fail=ConnectionRefusedError("clamd is down"))
    runtime.engines.update(antivirus=antivirus, spam=BarrierEngine(None))
    with pytest.raises(ConnectionRefusedError, match="clamd is down"):
        runtime.scan(message(), ENVELOPE)


def test_a_failed_engine_no_policy_asks_does_not_matter(runtime):
    url = BarrierEngine(None, fail=ConnectionRefusedError("resolver down"))
    runtime.engines.update(antivirus=BarrierEngine(None), spam=BarrierEngine(None), url=url)
    result = runtime.scan(message(), ENVELOPE)
    assert result.verdict.action == "deliver"
    assert url.prepared == 0


def sections(text: str):
    return parse_engine_sections(loads_yaml(text, "/etc/imss-milter/imss-milter.yaml")["engines"])


@pytest.mark.parametrize("text, line, expected", [
    ("engines:\n  antivirus: {backend: builtin}\n  virusscan: {}\n", 3, "unknown engine 'virusscan'"),
    ("engines:\n  spam:\n    on_error: ignore\n", 3, "on_error must be one of tempfail, accept"),
    ("engines:\n  spam:\n    timeout: soon\n", 3, "timeout"),
    ("engines:\n  spam: [builtin]\n", 2, "must be a mapping"),
])
def test_bad_engine_sections_name_file_and_line(text, line, expected):
    with pytest.raises(ConfigError) as info:
        sections(text)
    assert expected in str(info.value)
    assert f"imss-milter.yaml:{line}" in str(info.value)


def test_an_engine_section_left_empty_means_its_defaults_not_off():
    options = sections("engines:\n  antivirus:\n    # backend: clamd\n  spam: false\n")
    assert options["antivirus"].backend == "builtin"
    assert "spam" not in options


def test_engine_options_defaults_and_switching_an_engine_off():
    options = sections("engines:\n  spam: {timeout: 5s, on_error: accept}\n  url: false\n")
    assert options["spam"].timeout == 5.0 and options["spam"].on_error == "accept"
    assert options["spam"].backend == "builtin"
    assert "url" not in options


def test_components_come_from_current_when_installed(tmp_path):
    assert component_dir(str(tmp_path), "dlp").endswith("patterns/dlp")
    installed = tmp_path / "versions" / "dlp" / "2"
    installed.mkdir(parents=True)
    (tmp_path / "current").mkdir()
    (tmp_path / "current" / "dlp").symlink_to(installed)
    assert component_dir(str(tmp_path), "dlp") == str(tmp_path / "current" / "dlp")


def test_validate_component_refuses_an_unknown_component_and_a_broken_set(tmp_path):
    with pytest.raises(ConfigError, match="unknown pattern component"):
        validate_component("fonts", str(tmp_path))
    (tmp_path / "10-ids.yaml").write_text("identifiers:\n  card: {type: expression, pattern: '(['}\n")
    with pytest.raises(ConfigError, match="10-ids.yaml:2"):
        validate_component("dlp", str(tmp_path))


def test_a_misspelt_virus_category_is_refused_with_file_and_line():
    from imss_milter.policy import compile_rules
    text = "policies:\n  - name: grey\n    when:\n      virus: [adwear]\n    actions: [reject]\n"
    with pytest.raises(ConfigError) as info:
        compile_rules([("/etc/imss-milter/rules/50-local.yaml", text)])
    assert "50-local.yaml:4" in str(info.value)
    assert "unknown category 'adwear'" in str(info.value) and "adware" in str(info.value)


class CpuEngine:
    """A built-in, CPU-bound engine: no pool hand-off, prepare() runs in the milter's own thread."""

    def __init__(self):
        self.thread = None

    def prepare(self, model, envelope, scratch):
        self.thread = threading.current_thread()

    def check(self, condition, argument, model, envelope, scratch):
        return []


def test_cpu_bound_engines_prepare_in_the_calling_thread_beside_blocking_ones(runtime):
    barrier = threading.Barrier(2)
    antivirus, spam = CpuEngine(), BarrierEngine(barrier)
    url = BarrierEngine(barrier)
    runtime.engines.update(antivirus=antivirus, spam=spam, url=url)
    envelope = Envelope(sender="alice@example.org", recipients=["cfo@example.com"], queue_id="QF2")
    runtime.scan(message(), envelope)
    assert antivirus.thread is threading.current_thread()
    assert spam.prepared == url.prepared == 1      # the two blocking ones met at the barrier: concurrent


def test_check_config_warns_about_a_url_category_no_zone_produces(tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "50.yaml").write_text("policies:\n  - name: url-typo\n    when: {url.reputation: [phising]}\n"
                                       "    actions: [reject]\n")
    config = tmp_path / "imss-milter.yaml"
    config.write_text(f"rules_dir: {rules_dir}\nstate_dir: {tmp_path / 'state'}\nengines:\n  url:\n    zones:\n"
                      f"      - {{zone: uribl.test, type: domain, codes: {{'127.0.1.4': phishing}}}}\n")
    runtime = Runtime(load_settings(str(config)), sender_filter=False, store=False)
    [warning] = [w for w in runtime.rules.warnings if "phising" in w]
    assert "50.yaml:2" in warning and "phishing" in warning
