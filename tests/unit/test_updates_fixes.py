"""Regressions in pattern updates: keys that look like paths, a broken local rule file blamed on
every component, --force on the current version, rollback of unknown components, a damaged
state.json, and --config after `update status`."""

from __future__ import annotations

import base64
import json
import os

import pytest

from imss_milter import cli
from imss_milter.updates import UpdateError, build_bundle, generate_key, rollback, run_update, status
from imss_milter.updates.layout import installed_versions, read_state
from imss_milter.updates.manifest import load_public_key
from tests.integration.updates_support import (PROJECT_GOOD, PROJECT_RULE, PROJECT_WITHOUT_TEMPLATE, Events,
                                               make_settings, write_dlp_set)

SLASH_KEY = "/vEM3Rw0xqPKmX1w7Wgla6GDqC9InGjGvGBadzAfIw8="
AV_SIGNATURE = "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n"
BROKEN_RULE = """\
policies:
  - name: broken
    route: {from: any, to: any}
    when: {no-such-condition: [x]}
    actions: [{quarantine: {area: dlp}}]
"""


def release(root: str, version: str, dlp: str | None = PROJECT_GOOD, antivirus: str | None = None) -> str:
    """A bundle in root/bundle with the given components at `version`."""
    source = os.path.join(root, f"release-{version}")
    if dlp is not None:
        write_dlp_set(source, dlp)
    if antivirus is not None:
        os.makedirs(os.path.join(source, "antivirus"), exist_ok=True)
        with open(os.path.join(source, "antivirus", "main.hdb"), "w", encoding="utf-8") as handle:
            handle.write(antivirus)
    bundle = os.path.join(root, "bundle")
    build_bundle(source, bundle, version=version)
    return bundle


# -- 1. public keys are recognised by content ------------------------------------------------

def test_a_base64_key_starting_with_a_slash_is_a_key_not_a_path():
    assert len(base64.b64decode(SLASH_KEY)) == 32
    key = load_public_key(SLASH_KEY)
    assert key.public_bytes_raw() == base64.b64decode(SLASH_KEY)


def test_pem_text_pem_files_and_bad_values_are_told_apart(tmp_path):
    pem, raw = generate_key(str(tmp_path / "k.pem"))
    path = tmp_path / "public.pem"
    path.write_text(pem)
    assert load_public_key(pem).public_bytes_raw() == load_public_key(str(path)).public_bytes_raw()
    assert load_public_key(raw).public_bytes_raw() == base64.b64decode(raw)
    with pytest.raises(UpdateError, match=r"cannot read public key file .*missing\.pem.*expected PEM"):
        load_public_key(str(tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(UpdateError, match=r"junk\.pem.*expected an Ed25519 public key in PEM"):
        load_public_key(str(tmp_path / "junk.pem"))


# -- 2. a broken rule set is reported once; components are blamed only for what they break -----

def test_a_broken_local_rule_file_does_not_block_new_signatures(tmp_path):
    root = str(tmp_path)
    settings = make_settings(root, {"90-broken.yaml": BROKEN_RULE})
    events = Events()
    outcomes = run_update(settings, source=release(root, "1", antivirus=AV_SIGNATURE), events=events)
    assert {o.component: o.result for o in outcomes} == {"antivirus": "installed", "dlp": "installed"}
    assert installed_versions(settings.patterns_dir) == {"antivirus": "1", "dlp": "1"}
    assert all("rule set" not in o.reason for o in outcomes)
    [warning] = outcomes.warnings
    assert warning.startswith(f"the rule set in {settings.rules_dir} does not load: ")
    assert "90-broken.yaml" in warning
    assert [e["reason"] for e in events.named("pattern-update-warning")] == [warning]
    assert read_state(settings.patterns_dir)["last_update"]["warnings"] == [warning]


def test_only_the_component_that_breaks_the_rules_is_refused(tmp_path):
    root = str(tmp_path)
    settings = make_settings(root, {"50-project.yaml": PROJECT_RULE})
    [first] = run_update(settings, source=release(root, "1"))
    assert first.result == "installed"
    outcomes = run_update(settings, source=release(root, "2", dlp=PROJECT_WITHOUT_TEMPLATE,
                                                   antivirus=AV_SIGNATURE))
    results = {o.component: o for o in outcomes}
    assert results["antivirus"].result == "installed" and results["antivirus"].reason == ""
    assert results["dlp"].result == "failed" and "project-leak" in results["dlp"].reason
    assert installed_versions(settings.patterns_dir) == {"antivirus": "2", "dlp": "1"}
    assert outcomes.warnings == []


# -- 3. --force reinstalls the current version and one refusal never stops the others ----------

def test_force_reinstalls_the_current_version_from_a_fresh_directory(tmp_path, capsys):
    root = str(tmp_path)
    settings = make_settings(root)
    bundle = release(root, "2", antivirus=AV_SIGNATURE)
    run_update(settings, source=bundle)
    live = os.path.join(settings.patterns_dir, "versions", "antivirus", "2", "main.hdb")
    with open(live, "w", encoding="utf-8") as handle:       # damaged on disk: why an admin forces
        handle.write("# damaged\n")
    before = os.stat(os.path.dirname(live)).st_ino
    outcomes = run_update(settings, source=bundle, force=True)
    assert {o.component: o.result for o in outcomes} == {"antivirus": "installed", "dlp": "installed"}
    assert open(live, encoding="utf-8").read() == AV_SIGNATURE
    assert os.stat(os.path.dirname(live)).st_ino != before        # a new directory, not edited in place
    assert installed_versions(settings.patterns_dir) == {"antivirus": "2", "dlp": "2"}
    assert sorted(os.listdir(os.path.join(settings.patterns_dir, "versions", "antivirus"))) == ["2"]
    assert cli.main(["--config", settings.source, "update", "--source", bundle, "--force"]) == 0
    assert "antivirus: installed 2" in capsys.readouterr().out


# -- 4. rollback of a component the gateway does not know ------------------------------------

def test_rollback_of_an_unknown_component_is_refused_and_writes_nothing(tmp_path):
    root = str(tmp_path)
    settings = make_settings(root)
    run_update(settings, source=release(root, "1"))
    before = open(os.path.join(settings.patterns_dir, "state.json"), "rb").read()
    with pytest.raises(UpdateError, match="unknown component 'bogus' \\(expected one of: .*dlp"):
        rollback(settings, component="bogus")
    assert open(os.path.join(settings.patterns_dir, "state.json"), "rb").read() == before


# -- 5. a damaged state.json is reported, never overwritten ----------------------------------

def test_a_damaged_state_file_is_reported_and_not_overwritten(tmp_path, capsys):
    root = str(tmp_path)
    settings = make_settings(root)
    bundle = release(root, "1")
    run_update(settings, source=bundle)
    path = os.path.join(settings.patterns_dir, "state.json")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"components": {"dlp": ')
    for run in (lambda: run_update(settings, source=release(root, "2")),
                lambda: rollback(settings, component="dlp")):
        with pytest.raises(UpdateError, match=r"state\.json is damaged .*move it aside"):
            run()
    assert open(path, encoding="utf-8").read() == '{"components": {"dlp": '
    assert installed_versions(settings.patterns_dir) == {"dlp": "1"}
    assert cli.main(["--config", settings.source, "update", "status"]) == 1
    captured = capsys.readouterr()
    assert f"{path} is damaged" in captured.err and "dlp: 1" in captured.out
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"components": []}, handle)
    with pytest.raises(UpdateError, match="expected an object"):
        status(settings, strict=True)


# -- 6. --config after `update status`, `update build`, `update keygen` ----------------------

def test_config_is_accepted_after_the_update_actions(tmp_path, capsys):
    root = str(tmp_path)
    settings = make_settings(root)
    write_dlp_set(os.path.join(root, "src"), PROJECT_GOOD)
    assert cli.main(["update", "build", os.path.join(root, "src"), "--out", os.path.join(root, "b"),
                     "--version", "3", "--config", settings.source]) == 0
    assert cli.main(["update", "keygen", os.path.join(root, "k.pem"), "--config", settings.source]) == 0
    assert cli.main(["update", "--source", os.path.join(root, "b"), "--config", settings.source]) == 0
    capsys.readouterr()
    assert cli.main(["update", "status", "--json", "--config", settings.source]) == 0
    [row] = [r for r in json.loads(capsys.readouterr().out) if r["component"] == "dlp"]
    assert row["version"] == "3"


def test_one_component_that_cannot_be_switched_does_not_stop_the_others(tmp_path):
    root = str(tmp_path)
    settings = make_settings(root)
    os.makedirs(os.path.join(settings.patterns_dir, "current", "antivirus"))     # an admin's own copy
    outcomes = run_update(settings, source=release(root, "1", antivirus=AV_SIGNATURE))
    results = {o.component: o for o in outcomes}
    assert results["antivirus"].result == "failed" and "not a symlink" in results["antivirus"].reason
    assert results["dlp"].result == "installed"
    assert installed_versions(settings.patterns_dir) == {"dlp": "1"}
    assert read_state(settings.patterns_dir)["components"]["dlp"]["version"] == "1"
