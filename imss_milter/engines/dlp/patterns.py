"""DLP identifiers and templates shipped as data: <patterns_dir>/current/dlp/*.yaml, else the seed in patterns/dlp/.

Each file has the format of a rule file's `dlp:` section (identifiers:,
templates:). An installed pattern set replaces the shipped seed as a
whole (it is a complete version, like every other pattern component);
rule files are merged after it, so they can still replace any name.
"""

from __future__ import annotations

import glob
import importlib
import importlib.resources
import os
import threading

from ...errors import ConfigError
from ...settings import type_name
from ...yamlconf import loads_yaml, read_text

DLP_SUBDIR = "dlp"

# (path, mtime_ns, size) -> parsed mapping: reloads and tests compile rule sets often, the files rarely change
_parsed: dict[tuple, object] = {}
_parsed_lock = threading.Lock()


def shipped_patterns_dir() -> str:
    """The patterns/ directory installed with the package (the seed set)."""
    resources = importlib.resources.files("imss_milter.patterns")
    try:
        return os.fspath(resources)
    except TypeError:
        # a namespace package (no __init__.py) gives a MultiplexedPath: take its first directory
        return next(iter(importlib.import_module("imss_milter.patterns").__path__))


def dlp_patterns_dir(patterns_dir: str | None) -> str:
    """Where the DLP pattern files are read from: the installed version when there is one, else the seed."""
    if patterns_dir:
        installed = os.path.join(patterns_dir, "current", DLP_SUBDIR)
        if os.path.isdir(installed):
            return installed
    return os.path.join(shipped_patterns_dir(), DLP_SUBDIR)


def dlp_pattern_files(patterns_dir: str | None) -> list[str]:
    """The *.yaml files of the DLP pattern directory, in name order."""
    directory = dlp_patterns_dir(patterns_dir)
    return sorted(glob.glob(os.path.join(glob.escape(directory), "*.yaml")), key=os.path.basename)


def load_dlp_patterns(patterns_dir: str | None) -> list:
    """The `dlp:`-style mappings of every DLP pattern file (ConfigError with file and line when one is bad).

    None means the shipped seed set. Keys and values are checked by compile_dlp, which gets these
    before the rule files' sections.
    """
    sections = []
    for path in dlp_pattern_files(patterns_dir):
        data = _parse(path)
        if data is None:
            continue        # an empty file defines nothing
        if not isinstance(data, dict):
            raise ConfigError(f"expected a DLP pattern mapping with identifiers and/or templates, "
                              f"got {type_name(data)}", path, getattr(data, "line", 1))
        sections.append(data)
    return sections


def _parse(path: str):
    try:
        status = os.stat(path)
        key = (path, status.st_mtime_ns, status.st_size)
        with _parsed_lock:
            if key in _parsed:
                return _parsed[key]
    except OSError as exc:
        raise ConfigError(f"cannot read DLP pattern file: {exc.strerror}", path) from None
    data = loads_yaml(read_text(path, "DLP pattern file"), path)
    with _parsed_lock:
        _parsed[key] = data
    return data
