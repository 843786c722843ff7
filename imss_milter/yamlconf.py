"""YAML loading that remembers where every value came from, so config errors can name file and line.

load_yaml() returns plain Python data whose mappings and sequences are
LDict/LList: ordinary dict/list subclasses that also carry the file name
and the 1-based line of the node itself and of each key or item.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError


class LDict(dict):
    """A mapping from a YAML file; .file, .line, and .key_line(key)."""

    file: str | None = None
    line: int | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_lines: dict[Any, int] = {}

    def key_line(self, key) -> int | None:
        return self.key_lines.get(key, self.line)


class LList(list):
    """A sequence from a YAML file; .file, .line, and .item_line(index)."""

    file: str | None = None
    line: int | None = None

    def __init__(self, *args):
        super().__init__(*args)
        self.item_lines: list[int] = []

    def item_line(self, index: int) -> int | None:
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


class _Loader(yaml.SafeLoader):
    """SafeLoader that builds LDict/LList and refuses duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LDict:
    loader.flatten_mapping(node)
    result = LDict()
    result.file = loader.name
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise ConfigError("a mapping key must be a plain value", loader.name, key_node.start_mark.line + 1)
        if key in result:
            raise ConfigError(f"duplicate key {key!r} (first on line {result.key_lines[key]})",
                              loader.name, key_node.start_mark.line + 1)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LList:
    result = LList(loader.construct_object(child, deep=True) for child in node.value)
    result.file = loader.name
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def loads_yaml(text: str, file: str = "<string>") -> Any:
    """Parse YAML text; syntax errors become ConfigError with file and line."""
    loader = _Loader(text)
    loader.name = file
    try:
        return loader.get_single_data()
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{exc.context}: {problem}"
        raise ConfigError(f"YAML syntax error: {problem}", file, line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", file) from None
    finally:
        loader.dispose()


def read_text(path: str, what: str = "file") -> str:
    """A config file's text; unreadable files and bad UTF-8 become ConfigError with file (and line)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", path) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError("file is not valid UTF-8", path, line) from None


def load_yaml(path: str) -> Any:
    """Read and parse a YAML file; unreadable files and bad YAML become ConfigError."""
    return loads_yaml(read_text(path), path)


def where(container, key=None) -> tuple[str | None, int | None]:
    """(file, line) of a key of an LDict, an item of an LList, or the container itself."""
    file = getattr(container, "file", None)
    if key is not None and isinstance(container, LDict):
        return file, container.key_line(key)
    if key is not None and isinstance(container, LList):
        return file, container.item_line(key)
    return file, getattr(container, "line", None)


def fail(message: str, container, key=None) -> ConfigError:
    """A ConfigError located at a key/item of container (raise the result)."""
    file, line = where(container, key)
    return ConfigError(message, file, line)
