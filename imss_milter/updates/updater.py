"""Update, rollback, status and bundle building: what `imss-milter update` and `rollback` do.

An update fetches the manifest, checks its signature, downloads each
offered component to staging, checks every file's size and SHA-256, loads
the component in a throw-away engine (validate_component) and then the
whole rule set over the new patterns, and only then moves it to
versions/ and switches current/<component>. Anything that fails leaves
current/ as it was, and the reason goes to the outcome, state.json and a
system event. The running daemon notices the switch and reloads
(daemon.Master polls current/).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from ..errors import ImssError
from . import layout
from .config import UpdateConfig, update_config
from .manifest import (SIGNATURE_NAME, ComponentEntry, Manifest, UpdateError, check_relative_path,
                       check_version, load_private_key, load_public_key, manifest_bytes, parse_manifest,
                       sha256_file, sign, verify)
from .sources import MANIFEST_LIMIT, SIGNATURE_LIMIT, Source

EventSink = Callable[[str, str, dict], None]


@dataclass
class Outcome:
    """What happened to one component in one run."""

    component: str
    result: str                    # installed | unchanged | held | skipped | failed | rolled-back
    version: str | None = None     # the version offered (update) or switched to (rollback)
    previous: str | None = None    # the version that was current before
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.result == "failed"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def line(self) -> str:
        text = f"{self.component}: {self.result}"
        if self.version:
            text += f" {self.version}"
        if self.previous and self.result in ("installed", "rolled-back"):
            text += f" (was {self.previous})"
        if self.reason:
            text += f": {self.reason}"
        return text


class UpdateRun(list):
    """The outcomes of one update run (a list of Outcome), plus warnings that concern no single
    component (e.g. the local rule set does not load), each said once."""

    def __init__(self, outcomes=(), warnings=()):
        super().__init__(outcomes)
        self.warnings: list[str] = list(warnings)


def _no_events(category: str, event: str, detail: dict) -> None:
    pass


# -- update ---------------------------------------------------------------------------------

def run_update(settings, source: str | None = None, components=None, force: bool = False,
               events: EventSink = _no_events, config: UpdateConfig | None = None) -> UpdateRun:
    """Install what the source offers that differs from current/ (or the given components).

    Raises UpdateError when the source as a whole is unusable (unreachable, bad manifest, bad
    signature); per-component failures are outcomes with result "failed"."""
    config = config or update_config(settings)
    location = source or config.source
    if not location:
        raise UpdateError("no update source: pass --source URL|DIR or set updates.source in the config")
    patterns_dir = settings.patterns_dir
    layout.ensure_layout(patterns_dir)
    with layout.update_lock(patterns_dir):
        state = layout.read_state(patterns_dir, strict=True)     # damaged: refuse, never overwrite it
        _clear_staging(patterns_dir)
        try:
            manifest, signed = fetch_manifest(Source(location, config.timeout), config)
        except UpdateError as exc:
            _record_run(patterns_dir, state, location, "failure", str(exc), [])
            events("system", "pattern-update-failed", {"source": location, "reason": str(exc)})
            raise
        outcomes = _install(settings, config, Source(location, config.timeout), manifest, signed,
                            components, force, state, events)
        failures = [o for o in outcomes if o.failed]
        _record_run(patterns_dir, state, location, "failure" if failures else "success",
                    "; ".join(o.line() for o in failures), outcomes)
        state["last_update"]["warnings"] = list(outcomes.warnings)
        layout.write_state(patterns_dir, state)
    return outcomes


def fetch_manifest(source: Source, config: UpdateConfig) -> tuple[Manifest, bool]:
    """The parsed manifest and whether its signature was verified. With a public key configured, an
    unsigned or wrongly signed manifest is refused before anything else is downloaded."""
    data = source.fetch(source.manifest_name, MANIFEST_LIMIT, "the manifest")
    signature = source.fetch_optional(source.manifest_name + ".sig", SIGNATURE_LIMIT)
    signed = False
    if config.public_key:
        if signature is None:
            raise UpdateError(f"the manifest at {source} is not signed ({SIGNATURE_NAME} is missing) "
                              "and updates.public_key is set")
        verify(load_public_key(config.public_key), data, signature)
        signed = True
    return parse_manifest(data), signed


def _install(settings, config, source, manifest, signed, components, force, state, events) -> UpdateRun:
    from ..engines import COMPONENT_MODULES
    patterns_dir = settings.patterns_dir
    asked = list(components or config.components or [])
    names = asked or sorted(manifest.components)
    current = layout.installed_versions(patterns_dir)
    outcomes: list[Outcome] = []
    staged: dict[str, tuple[ComponentEntry, str]] = {}
    for name in names:
        entry = manifest.components.get(name)
        if name not in COMPONENT_MODULES:
            outcomes.append(Outcome(name, "failed" if name in asked else "skipped",
                                    entry.version if entry else None,
                                    reason="not a pattern component this gateway knows"))
            continue
        if entry is None:
            outcomes.append(Outcome(name, "failed", reason=f"the source {source} does not offer it"))
            continue
        info = _component_state(state, name)
        if entry.version == current.get(name) and not force:
            outcomes.append(Outcome(name, "unchanged", entry.version))
            continue
        if entry.version in info.get("rolled_back", []) and not force:
            outcomes.append(Outcome(name, "held", entry.version, current.get(name),
                                    reason="this version was rolled back; publish a newer one or use --force"))
            continue
        try:
            path = stage_component(patterns_dir, source, entry, config.max_size)
        except UpdateError as exc:
            outcomes.append(Outcome(name, "failed", entry.version, current.get(name), str(exc)))
            continue
        try:
            validate_loadable(name, path)
        except ImssError as exc:
            shutil.rmtree(path, ignore_errors=True)
            outcomes.append(Outcome(name, "failed", entry.version, current.get(name), f"does not load: {exc}"))
            continue
        staged[name] = (entry, path)
    accepted, refused, warnings = _check_rules(settings, staged)
    for name, reason in refused.items():
        entry, path = staged[name]
        shutil.rmtree(path, ignore_errors=True)
        outcomes.append(Outcome(name, "failed", entry.version, current.get(name), reason))
    for name in accepted:
        entry, path = staged[name]
        try:
            layout.install_staged(patterns_dir, name, entry.version, path)
            layout.switch_current(patterns_dir, name, entry.version)
        except (UpdateError, OSError) as exc:      # one component's trouble never stops the others
            shutil.rmtree(path, ignore_errors=True)
            outcomes.append(Outcome(name, "failed", entry.version, current.get(name), f"not installed: {exc}"))
            continue
        _remember_install(state, name, entry.version, str(source), signed)
        prune(patterns_dir, name, state, config.keep)
        outcomes.append(Outcome(name, "installed", entry.version, current.get(name)))
    for warning in warnings:
        events("system", "pattern-update-warning", {"source": str(source), "reason": warning})
    for outcome in outcomes:
        _component_state(state, outcome.component)["last_result"] = {
            "time": layout.utc_now(), "result": outcome.result, "version": outcome.version,
            "reason": outcome.reason}
        if outcome.result == "installed":
            events("system", "pattern-update", {"component": outcome.component, "version": outcome.version,
                                                "previous": outcome.previous, "source": str(source),
                                                "signed": signed})
        elif outcome.failed:
            events("system", "pattern-update-failed", {"component": outcome.component,
                                                       "version": outcome.version, "source": str(source),
                                                       "reason": outcome.reason})
    return UpdateRun(outcomes, warnings)


def _check_rules(settings, staged: dict) -> tuple[list[str], dict[str, str], list[str]]:
    """Which staged components ({name: (entry, path)}) to install, which to refuse ({name: reason})
    and warnings. A rule set that does not load even with the current patterns is the admin's to
    fix: it must not block new signatures, so each component that loads on its own is installed and
    the rules problem is said once. Otherwise each component is checked on top of the current set
    of the others, so only the one that breaks the rules is blamed."""
    if not staged:
        return [], {}, []
    paths = {name: path for name, (_, path) in staged.items()}
    try:
        check_rule_set(settings, paths)
        return list(staged), {}, []
    except ImssError:
        pass
    try:
        check_rule_set(settings, {})
    except ImssError as exc:
        return list(staged), {}, [f"the rule set in {settings.rules_dir} does not load: {exc}"]
    accepted, refused = [], {}
    for name, path in paths.items():
        try:
            check_rule_set(settings, {name: path})
            accepted.append(name)
        except ImssError as exc:
            refused[name] = f"the rule set does not load with it: {exc}"
    if len(accepted) > 1:
        try:
            check_rule_set(settings, {name: paths[name] for name in accepted})
        except ImssError as exc:         # each loads alone, not together: install none of them
            together = ", ".join(accepted)
            refused.update({name: f"the rule set does not load with {together} together: {exc}"
                            for name in accepted})
            accepted = []
    return accepted, refused, []


def validate_loadable(name: str, path: str) -> None:
    """validate_component, with an engine module that is not installed reported, not raised."""
    from ..engines import validate_component
    try:
        validate_component(name, path)
    except ImportError as exc:
        raise UpdateError(f"the {name} engine is not available here: {exc}") from None


def stage_component(patterns_dir: str, source: Source, entry: ComponentEntry, max_size: int) -> str:
    """Download a component's files into a fresh staging directory and check each one's size and
    SHA-256; the directory's path, or UpdateError (and nothing left behind)."""
    if entry.size > max_size:
        raise UpdateError(f"{entry.size} bytes is more than updates.max_size ({max_size})")
    staged = layout.new_staging(patterns_dir, f"{entry.name}-{entry.version}-")
    try:
        for item in entry.files:
            relative = f"{entry.name}/{entry.version}/{item.path}"
            data = source.fetch(relative, item.size, what=relative)
            if len(data) < item.size:
                raise UpdateError(f"{relative} is truncated: got {len(data)} of {item.size} bytes")
            digest = hashlib.sha256(data).hexdigest()
            if digest != item.sha256:
                raise UpdateError(f"{relative}: SHA-256 mismatch (expected {item.sha256}, got {digest})")
            target = os.path.join(staged, *item.path.split("/"))
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(data)
            os.chmod(target, 0o644)
        os.chmod(staged, 0o755)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def check_rule_set(settings, candidates: dict[str, str]) -> None:
    """Compile the configured rules over current/ with `candidates` ({component: dir}) swapped in, in
    a throw-away runtime; ConfigError if they would not load together."""
    from ..runtime import Runtime
    patterns_dir = settings.patterns_dir
    check = tempfile.mkdtemp(prefix="check-", dir=layout.staging_dir(patterns_dir))
    try:
        os.mkdir(os.path.join(check, "current"))
        targets = {name: os.path.realpath(os.path.join(layout.current_dir(patterns_dir), name))
                   for name in layout.current_links(patterns_dir)}
        targets.update({name: os.path.abspath(path) for name, path in candidates.items()})
        for name, target in targets.items():
            os.symlink(target, os.path.join(check, "current", name))
        Runtime(dataclasses.replace(settings, patterns_dir=check), store=False, sender_filter=False)
    finally:
        shutil.rmtree(check, ignore_errors=True)


def _clear_staging(patterns_dir: str) -> None:
    """Leftovers of a run that was killed: we hold the lock, so nothing else is staging."""
    directory = layout.staging_dir(patterns_dir)
    for name in os.listdir(directory):
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


# -- rollback -------------------------------------------------------------------------------

def rollback(settings, component: str | None = None, to: str | None = None,
             events: EventSink = _no_events) -> list[Outcome]:
    """Switch components back to a kept version: `to`, else the one current before.

    Without a component: those the last update installed (or, with `to`, the component that
    keeps that version). The version rolled back from is held: later updates skip it."""
    from ..engines import COMPONENT_MODULES
    patterns_dir = settings.patterns_dir
    if to is not None:
        check_version(to)
    if component is not None and component not in COMPONENT_MODULES:
        raise UpdateError(f"unknown component {component!r} (expected one of: {', '.join(COMPONENT_MODULES)})")
    layout.ensure_layout(patterns_dir)
    with layout.update_lock(patterns_dir):
        state = layout.read_state(patterns_dir, strict=True)    # damaged: refuse, never overwrite it
        current = layout.installed_versions(patterns_dir)
        names = _rollback_components(patterns_dir, state, current, component, to)
        outcomes = [_rollback_one(settings, state, name, current.get(name), to, events) for name in names]
        layout.write_state(patterns_dir, state)
    return outcomes


def _rollback_components(patterns_dir, state, current, component, to) -> list[str]:
    if component:
        return [component]
    if to:
        having = [name for name in current if to in layout.kept_versions(patterns_dir, name)]
        if len(having) != 1:
            raise UpdateError(f"{len(having) or 'no'} components keep version {to}: name one with --component")
        return having
    last = [o["component"] for o in (state.get("last_update") or {}).get("installed", [])]
    names = [name for name in last if name in current]
    if not names:
        raise UpdateError("the last update installed nothing to roll back: name one with --component")
    return names


def _rollback_one(settings, state, name, current, to, events) -> Outcome:
    patterns_dir = settings.patterns_dir
    info = _component_state(state, name)
    if current is None:
        return Outcome(name, "failed", to, reason="no installed version (the shipped seed set is in use)")
    target = to or previous_version(patterns_dir, info, current)
    if target is None:
        return Outcome(name, "failed", None, current, reason="no earlier version is kept")
    if target == current:
        return Outcome(name, "failed", target, current, reason="that version is already current")
    path = layout.version_dir(patterns_dir, name, target)
    if not os.path.isdir(path):
        kept = ", ".join(v for v in layout.kept_versions(patterns_dir, name) if v != current) or "none"
        return Outcome(name, "failed", target, current, reason=f"version {target} is not kept (kept: {kept})")
    try:
        validate_loadable(name, path)
        check_rule_set(settings, {name: path})
    except ImssError as exc:
        outcome = Outcome(name, "failed", target, current, reason=f"does not load: {exc}")
        events("system", "pattern-rollback-failed", {"component": name, "version": target, "reason": outcome.reason})
        return outcome
    layout.switch_current(patterns_dir, name, target)
    held = info.setdefault("rolled_back", [])
    if current not in held:
        held.append(current)
    if target in held:
        held.remove(target)
    entry = _history_entry(info, target) or {"version": target}
    info.update({"version": target, "installed_at": entry.get("installed_at"), "source": entry.get("source"),
                 "signed": entry.get("signed"), "activated_at": layout.utc_now()})
    info["last_result"] = {"time": layout.utc_now(), "result": "rolled-back", "version": target,
                           "reason": f"rolled back from {current}"}
    events("system", "pattern-rollback", {"component": name, "version": target, "previous": current})
    return Outcome(name, "rolled-back", target, current)


def previous_version(patterns_dir: str, info: dict, current: str) -> str | None:
    """The most recently installed kept version other than the current one and those rolled back."""
    held = set(info.get("rolled_back", []))
    kept = set(layout.kept_versions(patterns_dir, info.get("name", "")))
    for entry in reversed(info.get("history", [])):
        version = entry.get("version")
        if version != current and version not in held and version in kept:
            return version
    return None


# -- state ----------------------------------------------------------------------------------

def _component_state(state: dict, name: str) -> dict:
    info = state.setdefault("components", {}).setdefault(name, {})
    info["name"] = name
    info.setdefault("history", [])
    return info


def _history_entry(info: dict, version: str) -> dict | None:
    for entry in info.get("history", []):
        if entry.get("version") == version:
            return entry
    return None


def _remember_install(state: dict, name: str, version: str, source: str, signed: bool) -> None:
    info = _component_state(state, name)
    now = layout.utc_now()
    entry = {"version": version, "installed_at": now, "source": source, "signed": signed}
    info["history"] = [e for e in info["history"] if e.get("version") != version] + [entry]
    info.update({"version": version, "installed_at": now, "activated_at": now, "source": source,
                 "signed": signed})
    if version in info.get("rolled_back", []):
        info["rolled_back"].remove(version)      # a forced reinstall lifts the hold


def _record_run(patterns_dir, state, source, result, reason, outcomes) -> None:
    state["last_update"] = {"time": layout.utc_now(), "source": source, "result": result, "reason": reason,
                            "installed": [o.to_json() for o in outcomes if o.result == "installed"]}
    if not outcomes:
        layout.write_state(patterns_dir, state)


def prune(patterns_dir: str, name: str, state: dict, keep: int) -> None:
    """Keep the current version and the keep-1 most recently installed others; remove the rest."""
    info = _component_state(state, name)
    current = layout.installed_versions(patterns_dir).get(name)
    wanted = {current} if current else set()
    for entry in reversed(info["history"]):
        if len(wanted) >= keep:
            break
        wanted.add(entry.get("version"))
    for version in layout.kept_versions(patterns_dir, name):
        if version not in wanted:
            layout.remove_tree(layout.version_dir(patterns_dir, name, version))
    info["history"] = [e for e in info["history"] if e.get("version") in wanted]


# -- status ---------------------------------------------------------------------------------

def status(settings, strict: bool = False) -> list[dict]:
    """One entry per component with an installed version or update history (seed components too).
    A damaged state.json reads as empty (the links still tell the versions), or raises when strict;
    `update status` reports it with layout.state_problem."""
    from ..engines import COMPONENT_MODULES
    patterns_dir = settings.patterns_dir
    state = layout.read_state(patterns_dir, strict=strict)
    current = layout.installed_versions(patterns_dir)
    rows = []
    for name in sorted(set(COMPONENT_MODULES) | set(current) | set(state.get("components", {}))):
        info = state.get("components", {}).get(name, {})
        version = current.get(name)
        kept = set(layout.kept_versions(patterns_dir, name))
        history = [e.get("version") for e in reversed(info.get("history", []))]
        previous = [v for v in history if v != version and v in kept]
        previous += sorted(v for v in kept if v != version and v not in previous)
        rows.append({
            "component": name,
            "version": version,                         # None: the shipped seed set is in use
            "installed_at": info.get("installed_at") if version else None,
            "activated_at": info.get("activated_at") if version else None,
            "source": info.get("source") if version else "shipped seed",
            "signed": info.get("signed") if version else None,
            "previous": previous,
            "rolled_back": list(info.get("rolled_back", [])),
            "last_result": info.get("last_result"),
        })
    return rows


def last_update(patterns_dir: str) -> dict | None:
    return layout.read_state(patterns_dir).get("last_update")


# -- bundles for publishers -----------------------------------------------------------------

def default_version() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d.%H%M%S")


def build_bundle(source_dir: str, out_dir: str, version: str | None = None, key_path: str | None = None,
                 components=None, validate: bool = True) -> Manifest:
    """Publish DIR/<component>/... as out_dir/<component>/<version>/... with a manifest (signed when a
    key is given). Each component is loaded first, so a publisher cannot ship one that fails."""
    from ..engines import COMPONENT_MODULES
    version = check_version(version or default_version())
    if not os.path.isdir(source_dir):
        raise UpdateError(f"{source_dir} is not a directory (expected one subdirectory per component)")
    private_key = load_private_key(key_path) if key_path else None
    names = list(components or [name for name in sorted(os.listdir(source_dir))
                                if os.path.isdir(os.path.join(source_dir, name)) and name in COMPONENT_MODULES])
    if not names:
        raise UpdateError(f"{source_dir} has no component directory (expected some of: "
                          f"{', '.join(COMPONENT_MODULES)})")
    listed = {}
    for name in names:
        if name not in COMPONENT_MODULES:
            raise UpdateError(f"unknown component {name!r} (expected one of: {', '.join(COMPONENT_MODULES)})")
        directory = os.path.join(source_dir, name)
        if validate:
            validate_loadable(name, directory)
        listed[name] = _component_files(directory)
        if not listed[name]:
            raise UpdateError(f"{directory} has no files")
    os.makedirs(out_dir, exist_ok=True)
    published = {}
    for name, files in listed.items():
        target = os.path.join(out_dir, name, version)
        if os.path.exists(target):
            raise UpdateError(f"{target} exists: a published version is never changed; pick a new --version")
        temporary = tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir)
        entries = []
        for relative in files:
            destination = os.path.join(temporary, *relative.split("/"))
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            shutil.copyfile(os.path.join(source_dir, name, *relative.split("/")), destination)
            os.chmod(destination, 0o644)
            digest, size = sha256_file(destination)
            entries.append((relative, digest, size))
        _chmod_dirs(temporary)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(temporary, target)
        published[name] = (version, entries)
    data = manifest_bytes(published, layout.utc_now())
    if private_key is not None:
        _write_atomic(os.path.join(out_dir, SIGNATURE_NAME), sign(private_key, data))
    else:
        _remove_quietly(os.path.join(out_dir, SIGNATURE_NAME))
    _write_atomic(os.path.join(out_dir, "manifest.json"), data)
    return parse_manifest(data)


def _component_files(directory: str) -> list[str]:
    files = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.endswith("~"):
                continue
            relative = os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/")
            files.append(check_relative_path(relative))
    return files


def _chmod_dirs(path: str) -> None:
    for root, dirs, _ in os.walk(path):
        os.chmod(root, 0o755)


def _write_atomic(path: str, data: bytes) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def generate_key(path: str) -> tuple[str, str]:
    """A new Ed25519 signing key at path (mode 0600); returns the public key as (PEM, base64)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from .manifest import public_key_texts
    if os.path.exists(path):
        raise UpdateError(f"{path} exists: not overwriting a signing key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return public_key_texts(key)
