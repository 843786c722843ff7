"""The installed pattern sets on disk, and the state that says where they came from.

    <patterns_dir>/versions/<component>/<version>/...   complete sets, never changed once installed
    <patterns_dir>/current/<component> -> ../versions/<component>/<version>   (switched with rename)
    <patterns_dir>/staging/                              downloads being checked
    <patterns_dir>/state.json                            installed_at, source, history, rolled-back versions
    <patterns_dir>/.update.lock                          one update or rollback at a time

The daemon reads current/<component> (engines.component_dir); a switch is
one rename of a symlink, so a reader sees the old set or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone

from ..durable import fsync_dir
from .manifest import UpdateError

STATE_NAME = "state.json"
LOCK_NAME = ".update.lock"
LOCK_WAIT = 120.0


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def versions_dir(patterns_dir: str, component: str) -> str:
    return os.path.join(patterns_dir, "versions", component)


def version_dir(patterns_dir: str, component: str, version: str) -> str:
    return os.path.join(patterns_dir, "versions", component, version)


def current_dir(patterns_dir: str) -> str:
    return os.path.join(patterns_dir, "current")


def staging_dir(patterns_dir: str) -> str:
    return os.path.join(patterns_dir, "staging")


def current_links(patterns_dir: str) -> dict[str, str]:
    """{component: link target} of current/: cheap enough for the daemon to poll every second."""
    directory = current_dir(patterns_dir)
    try:
        names = os.listdir(directory)
    except OSError:
        return {}
    links = {}
    for name in names:
        if name.startswith("."):
            continue
        try:
            links[name] = os.readlink(os.path.join(directory, name))
        except OSError:
            continue        # not a link (an admin's copy): nothing we switched
    return links


def installed_versions(patterns_dir: str) -> dict[str, str]:
    """{component: version} of the sets in current/ (the version is the target directory's name)."""
    return {name: os.path.basename(target.rstrip("/")) for name, target in current_links(patterns_dir).items()}


def kept_versions(patterns_dir: str, component: str) -> list[str]:
    try:
        return sorted(name for name in os.listdir(versions_dir(patterns_dir, component))
                      if not name.startswith(".") and os.path.isdir(version_dir(patterns_dir, component, name)))
    except OSError:
        return []


def owner_of(path: str) -> tuple[int, int] | None:
    """Whom new files should belong to: the owner of patterns_dir, when we are root and it is not."""
    if os.geteuid() != 0:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    if info.st_uid == 0 and info.st_gid == 0:
        return None
    return info.st_uid, info.st_gid


def give(path: str, owner) -> None:
    """chown a file, link or tree to owner (the daemon's user must read what root installed)."""
    if owner is None:
        return
    os.lchown(path, *owner)
    if os.path.isdir(path) and not os.path.islink(path):
        for directory, dirs, files in os.walk(path):
            for name in dirs + files:
                os.lchown(os.path.join(directory, name), *owner)


def ensure_layout(patterns_dir: str) -> None:
    """Create patterns_dir, versions/, current/ and staging/; a patterns_dir we create belongs to the
    owner of its parent (state_dir, the daemon's)."""
    if not os.path.isdir(patterns_dir):
        parent = os.path.dirname(patterns_dir.rstrip("/")) or "/"
        os.makedirs(patterns_dir, mode=0o755, exist_ok=True)
        give(patterns_dir, owner_of(parent))
    if os.path.islink(current_dir(patterns_dir)):
        raise UpdateError(f"{current_dir(patterns_dir)} is a symlink: move it away; updates keep one link "
                          "per component in a current/ directory")
    owner = owner_of(patterns_dir)
    for path in (os.path.join(patterns_dir, "versions"), current_dir(patterns_dir), staging_dir(patterns_dir)):
        if not os.path.isdir(path):
            os.makedirs(path, mode=0o755, exist_ok=True)
            give(path, owner)


@contextlib.contextmanager
def update_lock(patterns_dir: str, wait: float = LOCK_WAIT):
    """Hold the patterns lock: a timer run and an admin's rollback must not interleave."""
    path = os.path.join(patterns_dir, LOCK_NAME)
    handle = open(path, "a+")
    try:
        give(path, owner_of(patterns_dir))
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise UpdateError(f"another update or rollback holds {path}") from None
                time.sleep(0.2)
        yield
    finally:
        handle.close()


def switch_current(patterns_dir: str, component: str, version: str) -> None:
    """Point current/<component> at versions/<component>/<version> with one atomic rename."""
    target = os.path.join("..", "versions", component, version)
    link = os.path.join(current_dir(patterns_dir), component)
    if os.path.exists(link) and not os.path.islink(link):
        raise UpdateError(f"{link} is not a symlink: move it away so updates can manage {component}")
    temporary = os.path.join(current_dir(patterns_dir), f".{component}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    os.symlink(target, temporary)
    give(temporary, owner_of(patterns_dir))
    os.replace(temporary, link)
    _fsync_dir(current_dir(patterns_dir))


def install_staged(patterns_dir: str, component: str, version: str, staged: str) -> None:
    """Move a checked staging directory to versions/<component>/<version> (same filesystem: a rename).
    A kept directory of that version that is not current is replaced (e.g. a forced reinstall); the
    current one is replaced by reinstall_current, never edited in place."""
    final = version_dir(patterns_dir, component, version)
    os.makedirs(os.path.dirname(final), mode=0o755, exist_ok=True)
    give(os.path.dirname(final), owner_of(patterns_dir))
    if os.path.exists(final):
        if installed_versions(patterns_dir).get(component) == version:
            reinstall_current(patterns_dir, component, version, staged)
            return
        remove_tree(final)
    give(staged, owner_of(patterns_dir))
    os.rename(staged, final)
    _fsync_dir(os.path.dirname(final))


def reinstall_current(patterns_dir: str, component: str, version: str, staged: str) -> None:
    """Replace the live version directory with a fresh copy: current/ first points at a hidden
    interim copy, then the old directory goes and the fresh one takes its name, then current/ points
    back at it. Each step is one rename, so the daemon only ever sees a complete set."""
    final = version_dir(patterns_dir, component, version)
    owner = owner_of(patterns_dir)
    interim_name = f".{version}.reinstall.{os.getpid()}"
    interim = os.path.join(versions_dir(patterns_dir, component), interim_name)
    second = tempfile.mkdtemp(prefix=f"{component}-{version}-copy-", dir=staging_dir(patterns_dir))
    os.rmdir(second)
    shutil.copytree(staged, second, symlinks=True)
    give(staged, owner)
    give(second, owner)
    if os.path.lexists(interim):
        remove_tree(interim)
    os.rename(staged, interim)
    switch_current(patterns_dir, component, interim_name)
    remove_tree(final)
    os.rename(second, final)
    _fsync_dir(os.path.dirname(final))
    switch_current(patterns_dir, component, version)
    remove_tree(interim)


def remove_tree(path: str) -> None:
    """Remove a version directory: renamed aside first, so a half-removed set is never under its name."""
    aside = f"{path}.removing.{os.getpid()}"
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def new_staging(patterns_dir: str, prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir=staging_dir(patterns_dir))


def _fsync_dir(path: str) -> None:
    """fsync_dir where the file system allows it: a swap stands without the directory fsync."""
    try:
        fsync_dir(path)
    except OSError:
        pass


# -- state.json ------------------------------------------------------------------------

def state_problem(patterns_dir: str) -> str | None:
    """What is wrong with state.json (file and why), or None when it is fine or does not exist yet."""
    path = os.path.join(patterns_dir, STATE_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror}"
    except ValueError as exc:
        return f"{path} is damaged (not valid JSON: {exc})"
    if not isinstance(state, dict) or not isinstance(state.get("components", {}), dict):
        return f"{path} is damaged (expected an object with a \"components\" object)"
    return None


def read_state(patterns_dir: str, strict: bool = False) -> dict:
    """The update state. strict (update, rollback): a damaged file is an UpdateError, so it is never
    overwritten with what little we know; otherwise (metrics) it reads as empty."""
    problem = state_problem(patterns_dir)
    if problem:
        if strict:
            raise UpdateError(f"{problem}: move it aside (mv {os.path.join(patterns_dir, STATE_NAME)} "
                              "state.json.damaged) and run again; current/ is not affected, only the "
                              "install history and rolled-back holds are lost")
        return {"components": {}}
    try:
        with open(os.path.join(patterns_dir, STATE_NAME), encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return {"components": {}}
    state.setdefault("components", {})
    return state


def write_state(patterns_dir: str, state: dict) -> None:
    path = os.path.join(patterns_dir, STATE_NAME)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, 0o644)
    give(temporary, owner_of(patterns_dir))
    os.replace(temporary, path)
