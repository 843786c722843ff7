"""Every file in tests/messages/ through the milter (Milter.testctx) with the shipped rules.

The expected verdicts are data (tests/messages/expected.yaml), so a new
evasion sample is one file and one line.
"""

from __future__ import annotations

import os
import textwrap

import pytest
import yaml

from imss_milter.milter import ImssMilter
from imss_milter.runtime import Runtime
from imss_milter.settings import load_settings
from tests.helpers.milterctx import run_message

HERE = os.path.dirname(os.path.abspath(__file__))
MESSAGES = os.path.join(os.path.dirname(HERE), "messages")
REPO = os.path.dirname(os.path.dirname(HERE))
with open(os.path.join(MESSAGES, "expected.yaml")) as handle:
    EXPECTED = yaml.safe_load(handle)
MILTER_RESULT = {"deliver": "continue", "quarantine": "discard", "reject": "reject",
                 "tempfail": "tempfail", "delete": "discard"}


def test_every_sample_has_an_expectation():
    samples = sorted(name for name in os.listdir(MESSAGES) if name.endswith(".eml"))
    assert samples == sorted(EXPECTED)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    root = tmp_path_factory.mktemp("messages")
    config = root / "imss-milter.yaml"
    config.write_text(textwrap.dedent(f"""\
        milter: {{user: ""}}
        internal_domains: [example.com]
        rules_dir: {os.path.join(REPO, "rules")}
        state_dir: {root / "state"}
        """))
    rt = Runtime(load_settings(str(config)))
    previous = ImssMilter.runtime
    ImssMilter.runtime = rt
    yield rt
    ImssMilter.runtime = previous


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample(runtime, name):
    expected = EXPECTED[name]
    with open(os.path.join(MESSAGES, name), "rb") as handle:
        raw = handle.read()
    queue_id = "Q" + name.replace("-", "").replace(".eml", "")[:10].upper()
    outcome = run_message(raw, sender="alice@example.org", recipients=["bob@example.com"], queue_id=queue_id)
    assert outcome.result == MILTER_RESULT[expected["verdict"]]
    [record] = runtime.store.query_logs(kind="messages", queue_id=queue_id)
    assert record["verdict"] == expected["verdict"]
    assert record["rules"] == expected["rules"]
    if "header" in expected:
        assert expected["header"] in [name for name, _ in outcome.added_headers]
    if expected["verdict"] == "quarantine":
        held = [m for m in runtime.store.list() if m["queue_id"] == queue_id]
        assert len(held) == 1
        assert runtime.store.read_raw(held[0]["id"]).rstrip().endswith(raw.rstrip()[-40:])   # the whole message kept
