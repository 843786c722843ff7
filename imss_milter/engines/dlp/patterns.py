"""DLP identifiers and templates shipped as data: <patterns_dir>/current/dlp/*.yaml, else the seed in patterns/dlp/.

Each file has the format of a rule file's `dlp:` section (identifiers:,
templates:). An installed pattern set replaces the shipped seed as a
whole (it is a complete version, like every other pattern component);
rule files are merged after it, so they can still replace any name.
"""

from __future__ import annotations

import glob
import os
import threading

from ...errors import ConfigError
from .. import component_dir
from ...settings import type_name
from ...yamlconf import loads_yaml, read_text

DLP_SUBDIR = "dlp"

# (path, mtime_ns, size) -> parsed mapping: reloads and tests compile rule sets often, the files rarely change
_parsed: dict[tuple, object] = {}
_parsed_lock = threading.Lock()


def dlp_patterns_dir(patterns_dir: str | None) -> str:
    """Where the DLP pattern files are read from: the installed version when there is one, else the seed."""
    return component_dir(patterns_dir, DLP_SUBDIR)


def dlp_pattern_files(patterns_dir: str | None) -> list[str]:
    """The *.yaml files of the DLP pattern directory, in name order."""
    return _yaml_files(dlp_patterns_dir(patterns_dir))


def _yaml_files(directory: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(directory), "*.yaml")), key=os.path.basename)


def load_dlp_patterns(patterns_dir: str | None) -> list:
    """The `dlp:`-style mappings of every DLP pattern file (ConfigError with file and line when one is bad).

    None means the shipped seed set. Keys and values are checked by compile_dlp, which gets these
    before the rule files' sections.
    """
    return _load_files(dlp_pattern_files(patterns_dir))


def validate_component(component: str, path: str) -> None:
    """An update's DLP files in `path` must parse and compile on their own (ConfigError otherwise)."""
    from .config import compile_dlp
    files = _yaml_files(path)
    if not files:
        raise ConfigError("a DLP pattern set needs at least one *.yaml file", path)
    compile_dlp([], patterns=_load_files(files))


def _load_files(paths: list[str]) -> list:
    sections = []
    for path in paths:
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
