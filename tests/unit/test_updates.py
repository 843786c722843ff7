"""Pattern updates from a directory source: install, verification failures that leave the current set
alone, rollback and holds, pruning, manifests, config errors, the CLI and the scheduler."""

from __future__ import annotations

import json
import os
import threading

import pytest

from imss_milter import cli
from imss_milter.engines import component_dir
from imss_milter.errors import ConfigError
from imss_milter.policy.types import Envelope
from imss_milter.runtime import Runtime
from imss_milter.updates import UpdateError, generate_key, rollback, run_update, status
from imss_milter.updates.config import Schedule, parse_update_config
from imss_milter.updates.layout import installed_versions, kept_versions, read_state
from imss_milter.updates.manifest import parse_manifest
from imss_milter.updates.metrics import UpdateResultCollector
from imss_milter.updates.scheduler import UpdateScheduler, next_delay
from imss_milter.yamlconf import loads_yaml
from tests.integration.updates_support import (PROJECT_GOOD, PROJECT_MATCHES_CLEAN_MAIL, PROJECT_RULE,
                                               PROJECT_UNLOADABLE, PROJECT_WITHOUT_TEMPLATE, Events,
                                               make_bundle, make_settings)

CLEAN = (b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: greetings\r\n\r\n"
         b"hello Bob, see you on Monday\r\n")
LEAK = (b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: figures\r\n\r\n"
        b"the budget for PRJ-123456 is attached\r\n")


def verdict(settings, raw: bytes) -> str:
    runtime = Runtime(settings, store=False, sender_filter=False)
    return runtime.scan(raw, Envelope(sender="alice@example.com", recipients=["bob@example.org"])).verdict.action


@pytest.fixture
def installed(tmp_path):
    """Settings whose rules use the project-leak template, with v1 of the DLP set installed."""
    root = str(tmp_path)
    settings = make_settings(root, {"50-project.yaml": PROJECT_RULE})
    make_bundle(root, "seedless", "0", PROJECT_GOOD, out=os.path.join(root, "first"))
    # the rules need project-leak, which the shipped seed lacks: install v1 before any runtime exists
    events = Events()
    [outcome] = run_update(settings, source=os.path.join(root, "first"), events=events)
    assert outcome.result == "installed"
    return settings, root


def current_files(settings) -> dict[str, bytes]:
    directory = component_dir(settings.patterns_dir, "dlp")
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))}


def test_a_directory_source_installs_a_version_that_the_rules_then_use(installed):
    settings, root = installed
    assert installed_versions(settings.patterns_dir) == {"dlp": "0"}
    link = os.path.join(settings.patterns_dir, "current", "dlp")
    assert os.path.islink(link) and os.readlink(link) == os.path.join("..", "versions", "dlp", "0")
    assert verdict(settings, LEAK) == "quarantine"
    assert verdict(settings, CLEAN) == "deliver"
    [row] = [r for r in status(settings) if r["component"] == "dlp"]
    assert row["version"] == "0" and row["source"].endswith("first") and row["installed_at"]
    assert row["previous"] == [] and row["signed"] is False


def test_the_same_version_again_is_unchanged(installed):
    settings, root = installed
    [outcome] = run_update(settings, source=os.path.join(root, "first"))
    assert outcome.result == "unchanged" and outcome.version == "0"


def test_a_hash_mismatch_leaves_the_current_set_and_records_why(installed):
    settings, root = installed
    bundle = make_bundle(root, "b", "1", PROJECT_GOOD)
    path = os.path.join(bundle, "dlp", "1", "50-project.yaml")
    data = open(path, "rb").read()
    with open(path, "wb") as handle:                       # same size, other bytes
        handle.write(data.replace(b"PRJ", b"XYZ"))
    before = current_files(settings)
    events = Events()
    [outcome] = run_update(settings, source=bundle, events=events)
    assert outcome.result == "failed" and "SHA-256 mismatch" in outcome.reason
    assert installed_versions(settings.patterns_dir) == {"dlp": "0"}
    assert current_files(settings) == before
    assert kept_versions(settings.patterns_dir, "dlp") == ["0"]
    assert os.listdir(os.path.join(settings.patterns_dir, "staging")) == []
    [event] = events.named("pattern-update-failed")
    assert event["component"] == "dlp" and "SHA-256" in event["reason"]
    assert read_state(settings.patterns_dir)["last_update"]["result"] == "failure"


def test_a_truncated_file_is_refused(installed):
    settings, root = installed
    bundle = make_bundle(root, "b", "1", PROJECT_GOOD)
    path = os.path.join(bundle, "dlp", "1", "00-identifiers.yaml")
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    [outcome] = run_update(settings, source=bundle)
    assert outcome.result == "failed" and "truncated" in outcome.reason
    assert installed_versions(settings.patterns_dir) == {"dlp": "0"}


def test_a_component_that_does_not_load_never_becomes_current(installed):
    settings, root = installed
    bundle = make_bundle(root, "b", "1", PROJECT_UNLOADABLE, validate=False)
    events = Events()
    [outcome] = run_update(settings, source=bundle, events=events)
    assert outcome.result == "failed" and "does not load" in outcome.reason and "telepathy" in outcome.reason
    assert installed_versions(settings.patterns_dir) == {"dlp": "0"}
    assert "50-project.yaml" in events.named("pattern-update-failed")[0]["reason"]


def test_a_set_that_loads_alone_but_breaks_the_rules_is_refused(installed):
    settings, root = installed
    bundle = make_bundle(root, "b", "1", PROJECT_WITHOUT_TEMPLATE)
    [outcome] = run_update(settings, source=bundle)
    assert outcome.result == "failed" and "rule set does not load" in outcome.reason
    assert "project-leak" in outcome.reason
    assert installed_versions(settings.patterns_dir) == {"dlp": "0"}
    assert verdict(settings, LEAK) == "quarantine"


def test_the_publisher_cannot_build_an_unloadable_bundle(tmp_path):
    with pytest.raises(ConfigError, match="telepathy"):
        make_bundle(str(tmp_path), "b", "1", PROJECT_UNLOADABLE)


def test_signed_bundles_are_verified_and_forgeries_refused(tmp_path):
    root = str(tmp_path)
    key = os.path.join(root, "publisher.pem")
    pem, raw = generate_key(key)
    other = os.path.join(root, "attacker.pem")
    generate_key(other)
    settings = make_settings(root, updates=f"updates: {{public_key: \"{raw}\"}}\n")

    unsigned = make_bundle(root, "unsigned", "1", PROJECT_GOOD)
    with pytest.raises(UpdateError, match="not signed"):
        run_update(settings, source=unsigned)
    forged = make_bundle(root, "forged", "1", PROJECT_GOOD, key=other)
    events = Events()
    with pytest.raises(UpdateError, match="bad signature"):
        run_update(settings, source=forged, events=events)
    assert "bad signature" in events.named("pattern-update-failed")[0]["reason"]
    assert installed_versions(settings.patterns_dir) == {}
    assert read_state(settings.patterns_dir)["last_update"]["result"] == "failure"

    good = make_bundle(root, "good", "1", PROJECT_GOOD, key=key)
    manifest_path = os.path.join(good, "manifest.json")
    original = open(manifest_path, "rb").read()
    with open(manifest_path, "wb") as handle:      # a mirror that edits the signed manifest
        handle.write(original.replace(b'"1"', b'"9"'))
    with pytest.raises(UpdateError, match="bad signature"):
        run_update(settings, source=good)
    with open(manifest_path, "wb") as handle:
        handle.write(original)
    [outcome] = run_update(settings, source=good)
    assert outcome.result == "installed"
    assert [r for r in status(settings) if r["component"] == "dlp"][0]["signed"] is True


def test_rollback_after_a_bad_but_loadable_update_and_the_version_is_held(installed):
    settings, root = installed
    bundle = make_bundle(root, "b", "1", PROJECT_MATCHES_CLEAN_MAIL)
    [outcome] = run_update(settings, source=bundle)
    assert outcome.result == "installed" and outcome.previous == "0"
    assert verdict(settings, CLEAN) == "quarantine"          # the bad push catches ordinary mail

    events = Events()
    [back] = rollback(settings, events=events)
    assert (back.result, back.version, back.previous) == ("rolled-back", "0", "1")
    assert verdict(settings, CLEAN) == "deliver"
    assert verdict(settings, LEAK) == "quarantine"
    assert events.named("pattern-rollback") == [{"component": "dlp", "version": "0", "previous": "1"}]

    [again] = run_update(settings, source=bundle)              # the timer runs again: not reinstalled
    assert again.result == "held" and installed_versions(settings.patterns_dir) == {"dlp": "0"}
    [row] = [r for r in status(settings) if r["component"] == "dlp"]
    assert row["rolled_back"] == ["1"] and row["previous"] == ["1"]

    make_bundle(root, "b", "2", PROJECT_GOOD)                  # the publisher fixes it
    [fixed] = run_update(settings, source=bundle)
    assert fixed.result == "installed" and fixed.version == "2"
    [forced] = run_update(settings, source=make_bundle(root, "c", "1", PROJECT_MATCHES_CLEAN_MAIL), force=True)
    assert forced.result == "installed"
    assert [r for r in status(settings) if r["component"] == "dlp"][0]["rolled_back"] == []


def test_rollback_to_a_named_version_and_errors(installed):
    settings, root = installed
    bundle = make_bundle(root, "b", "1", PROJECT_GOOD)
    run_update(settings, source=bundle)
    make_bundle(root, "b", "2", PROJECT_GOOD)
    run_update(settings, source=bundle)
    [outcome] = rollback(settings, component="dlp", to="0")
    assert outcome.result == "rolled-back" and installed_versions(settings.patterns_dir) == {"dlp": "0"}
    [missing] = rollback(settings, component="dlp", to="7")
    assert missing.result == "failed" and "not kept" in missing.reason
    [seed] = rollback(settings, component="url")
    assert seed.result == "failed" and "seed" in seed.reason
    with pytest.raises(UpdateError, match="invalid version"):
        rollback(settings, component="dlp", to="../0")


def test_only_the_last_versions_are_kept(installed):
    settings, root = installed
    settings = make_settings(root, updates="updates: {keep: 2}\n")
    bundle = os.path.join(root, "b")
    for version in ("1", "2", "3"):
        make_bundle(root, "b", version, PROJECT_GOOD)
        run_update(settings, source=bundle)
    assert kept_versions(settings.patterns_dir, "dlp") == ["2", "3"]
    assert [r for r in status(settings) if r["component"] == "dlp"][0]["previous"] == ["2"]


@pytest.mark.parametrize("path", ["../evil.yaml", "/etc/passwd", "a/../../b", ".hidden", "a//b"])
def test_manifest_paths_cannot_leave_the_version_directory(path):
    manifest = {"format": 1, "components": {"dlp": {"version": "1", "files": [
        {"path": path, "sha256": "0" * 64, "size": 1}]}}}
    with pytest.raises(UpdateError, match="invalid file path"):
        parse_manifest(json.dumps(manifest).encode())


@pytest.mark.parametrize("blob, message", [
    (b"not json", "not valid JSON"), (b"[]", "JSON object"), (b'{"format": 2}', "format"),
    (b'{"format": 1, "components": {"dlp": {"version": "../x", "files": []}}}', "invalid version"),
    (b'{"format": 1, "components": {"dlp": {"version": "1", "files": [{"path": "a", "sha256": "zz", "size": 1}]}}}',
     "sha256"),
])
def test_damaged_manifests_are_reported(blob, message):
    with pytest.raises(UpdateError, match=message):
        parse_manifest(blob)


def test_a_missing_source_is_an_error_that_touches_nothing(installed):
    settings, root = installed
    with pytest.raises(UpdateError, match="not found"):
        run_update(settings, source=os.path.join(root, "nowhere"))
    with pytest.raises(UpdateError, match="no update source"):
        run_update(settings)
    assert installed_versions(settings.patterns_dir) == {"dlp": "0"}


@pytest.mark.parametrize("text, message", [
    ("updates: {keep: 0}", "updates.keep"),
    ("updates: {frequency: 1h}", "unknown key 'frequency'"),
    ("updates: {components: [fonts]}", "unknown component 'fonts'"),
    ("updates: {public_key: 'abc'}", "public_key"),
    ("updates: {schedule: {random_delay: 5m}}", "interval"),
    ("updates: {schedule: {interval: soon}}", "updates.schedule.interval"),
])
def test_bad_updates_sections_name_file_and_line(text, message):
    data = loads_yaml("# config\n" + text + "\n", "/etc/imss-milter/imss-milter.yaml")
    with pytest.raises(ConfigError, match=message) as caught:
        parse_update_config(data["updates"])
    assert caught.value.file == "/etc/imss-milter/imss-milter.yaml" and caught.value.line == 2


def test_schedule_is_parsed_and_delays_stay_within_the_random_window():
    config = parse_update_config(loads_yaml("u: {schedule: {interval: 6h, random_delay: 30m}}")["u"])
    assert config.schedule == Schedule(6 * 3600, 1800)
    assert next_delay(config.schedule, rand=lambda: 0.0) == 6 * 3600
    assert next_delay(config.schedule, rand=lambda: 0.999) < 6 * 3600 + 1800


def test_the_scheduler_runs_its_job_repeatedly_until_stopped():
    runs = threading.Semaphore(0)
    scheduler = UpdateScheduler(Schedule(0.01, 0.01), runs.release).start()
    try:
        assert runs.acquire(timeout=30) and runs.acquire(timeout=30)
    finally:
        scheduler.stop()


def test_the_last_update_result_is_a_metric(installed):
    settings, root = installed
    families = {f.name: f for f in UpdateResultCollector(settings.patterns_dir).collect()}
    samples = {s.labels["result"]: s.value for s in families["imss_pattern_update_last_result"].samples}
    assert samples == {"success": 1.0, "failure": 0.0}
    assert families["imss_pattern_update_last_run_timestamp_seconds"].samples[0].value > 0
    with pytest.raises(UpdateError):
        run_update(settings, source=os.path.join(root, "nowhere"))
    families = {f.name: f for f in UpdateResultCollector(settings.patterns_dir).collect()}
    samples = {s.labels["result"]: s.value for s in families["imss_pattern_update_last_result"].samples}
    assert samples == {"success": 0.0, "failure": 1.0}


def test_the_command_line_builds_signs_installs_shows_and_rolls_back(tmp_path, capsys):
    root = str(tmp_path)
    assert cli.main(["update", "keygen", os.path.join(root, "key.pem")]) == 0
    public = capsys.readouterr().out.strip().splitlines()[-1]
    settings = make_settings(root, {"50-project.yaml": PROJECT_RULE},
                             updates=f"updates: {{public_key: \"{public}\", source: {root}/bundle}}\n")
    config = settings.source
    from tests.integration.updates_support import write_dlp_set
    write_dlp_set(os.path.join(root, "v1"), PROJECT_GOOD)
    write_dlp_set(os.path.join(root, "v2"), PROJECT_MATCHES_CLEAN_MAIL)
    for version in ("1", "2"):
        assert cli.main(["update", "build", os.path.join(root, f"v{version}"), "--out", f"{root}/bundle",
                         "--version", version, "--key", os.path.join(root, "key.pem")]) == 0
        assert f"dlp {version}" in capsys.readouterr().out
        if version == "1":
            assert cli.main(["--config", config, "update", "--json"]) == 0
            assert json.loads(capsys.readouterr().out)[0]["result"] == "installed"
    assert cli.main(["--config", config, "update", "--component", "dlp"]) == 0
    assert "dlp: installed 2 (was 1)" in capsys.readouterr().out
    assert cli.main(["--config", config, "update", "status", "--json"]) == 0
    [row] = [r for r in json.loads(capsys.readouterr().out) if r["component"] == "dlp"]
    assert row["version"] == "2" and row["previous"] == ["1"] and row["signed"] is True
    assert cli.main(["--config", config, "rollback", "--component", "dlp"]) == 0
    assert "dlp: rolled-back 1 (was 2)" in capsys.readouterr().out
    assert cli.main(["--config", config, "update", "status"]) == 0
    assert "rolled back (not reinstalled): 2" in capsys.readouterr().out
    assert cli.main(["--config", config, "rollback", "--to", "5"]) == 1
    assert "no components keep version 5" in capsys.readouterr().err
    events = json.loads(_logs(config, capsys))
    names = [e.get("event") for e in events]
    assert "pattern-update" in names and "pattern-rollback" in names


def _logs(config, capsys) -> str:
    assert cli.main(["--config", config, "logs", "--events", "--json"]) == 0
    return capsys.readouterr().out


EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def test_antivirus_hash_signatures_are_a_component_too(tmp_path):
    pytest.importorskip("imss_milter.engines.antivirus")
    import hashlib
    from imss_milter.updates import build_bundle
    root = str(tmp_path)
    settings = make_settings(root)
    good = tmp_path / "release" / "antivirus"
    good.mkdir(parents=True)
    (good / "main.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Eicar-Test-Signature\n")
    build_bundle(str(tmp_path / "release"), os.path.join(root, "av"), version="1")
    [outcome] = run_update(settings, source=os.path.join(root, "av"))
    assert outcome.result == "installed"
    assert os.path.isfile(os.path.join(component_dir(settings.patterns_dir, "antivirus"), "main.hdb"))

    (good / "main.hdb").write_text("nothex:zz:Broken\n")
    build_bundle(str(tmp_path / "release"), os.path.join(root, "av"), version="2", validate=False)
    [outcome] = run_update(settings, source=os.path.join(root, "av"))
    assert outcome.result == "failed" and "main.hdb:1" in outcome.reason
    assert installed_versions(settings.patterns_dir) == {"antivirus": "1"}


def test_a_scheduled_run_installs_from_the_configured_source(tmp_path):
    from imss_milter.updates.scheduler import run_update_process
    root = str(tmp_path)
    bundle = make_bundle(root, "b", "7", PROJECT_GOOD)
    settings = make_settings(root, updates=f"updates: {{source: {bundle}, schedule: {{interval: 1h}}}}\n")
    assert run_update_process(settings.source) == 0
    assert installed_versions(settings.patterns_dir) == {"dlp": "7"}
    assert run_update_process(os.path.join(root, "missing.yaml")) != 0
