"""The built-in signature set: ClamAV-format hash signatures (.hdb, .hsb) and YARA rules, loaded from one directory.

Hash signatures are looked up by size first, so a part whose size no
signature has is never hashed; YARA rules are compiled once per set and
matched with the GIL released (yara-python), so a large attachment does
not stall other connections. Every file problem is a ConfigError with the
file and line.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import threading
from dataclasses import dataclass, field

import yara

from ...errors import ConfigError
from ...yamlconf import read_text
from .categories import CATEGORIES, category_from_name, normalise_category

HASH_EXTENSIONS = {".hdb": ("md5",), ".hsb": ("sha256", "sha1")}
YARA_EXTENSIONS = (".yar", ".yara")
DIGEST_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64}
ANY_SIZE = None
# yara-python scans with at most 32 threads at once (YR_MAX_THREADS); more fail with an error,
# and a milter may have many connection threads, so the rest wait here.
YARA_THREADS = threading.BoundedSemaphore(16)
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_NAME = re.compile(r"^[^\s:]+$")
_YARA_ERROR = re.compile(r"^(?P<file>.*?)\((?P<line>\d+)\): (?P<message>.*)$", re.S)
# what libyara says for an `include` when includes are disabled, and what we tell the admin instead
_YARA_INCLUDE_REFUSED = "includes are disabled"
INCLUDE_NOT_ALLOWED = "include is not allowed in pattern files; put the rules in the component"


@dataclass(frozen=True)
class Detection:
    """One signature that matched a payload."""

    name: str
    category: str
    kind: str            # "hash" or "yara"


@dataclass
class HashSignatures:
    """size (or ANY_SIZE) -> algorithm -> digest -> signature name."""

    by_size: dict = field(default_factory=dict)
    count: int = 0

    def add(self, size, algorithm: str, digest: str, name: str) -> None:
        self.by_size.setdefault(size, {}).setdefault(algorithm, {})[digest] = name
        self.count += 1

    def lookup(self, payload: bytes) -> list[str]:
        """Names of the signatures whose size and digest match payload."""
        by_size = self.by_size
        sized, any_size = by_size.get(len(payload)), by_size.get(ANY_SIZE)
        if sized is None and any_size is None:
            return []
        wanted = [table for table in (sized, any_size) if table is not None]
        digests: dict[str, str] = {}
        names = []
        for table in wanted:
            for algorithm, signatures in table.items():
                if algorithm not in digests:
                    # hashlib releases the GIL on large inputs
                    digests[algorithm] = hashlib.new(algorithm, payload).hexdigest()
                name = signatures.get(digests[algorithm])
                if name is not None and name not in names:
                    names.append(name)
        return names


def parse_hash_line(text: str, extension: str) -> tuple:
    """(size or ANY_SIZE, algorithm, digest, name) from `HASH:SIZE:NAME[:FLEVEL[:FLEVEL]]`; ValueError says why."""
    fields = text.split(":")
    if not 3 <= len(fields) <= 5:
        raise ValueError("expected HASH:SIZE:NAME (ClamAV hash signature format)")
    digest, size_text, name = (item.strip() for item in fields[:3])
    algorithm = next((algo for algo in HASH_EXTENSIONS[extension] if DIGEST_LENGTHS[algo] == len(digest)), None)
    if algorithm is None or not _HEX.match(digest):
        expected = " or ".join(f"{DIGEST_LENGTHS[a]} hex digits ({a.upper()})" for a in HASH_EXTENSIONS[extension])
        raise ValueError(f"hash {digest!r}: expected {expected}")
    if size_text == "*":
        size = ANY_SIZE
    elif size_text.isdigit():
        size = int(size_text)
    else:
        raise ValueError(f"size {size_text!r}: expected a number of bytes or *")
    if not _NAME.match(name):
        raise ValueError(f"name {name!r}: expected a signature name without spaces or ':'")
    for flevel in fields[3:]:
        if flevel.strip() and not flevel.strip().isdigit():
            raise ValueError(f"functionality level {flevel!r}: expected a number")
    return size, algorithm, digest.lower(), name


def load_hash_file(path: str, signatures: HashSignatures) -> None:
    extension = os.path.splitext(path)[1].lower()
    for number, line in enumerate(_read_lines(path), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            signatures.add(*parse_hash_line(text, extension))
        except ValueError as exc:
            raise ConfigError(str(exc), path, number) from None


def _read_lines(path: str) -> list[str]:
    return read_text(path, "signature file").splitlines()


def compile_yara(paths: list[str]):
    """Compiled rules of the files (None without files); a syntax error names its file and line."""
    if not paths:
        return None
    sources = {}
    for path in paths:
        # namespaces keep equal rule names in two files apart
        sources[f"f{len(sources)}_{os.path.splitext(os.path.basename(path))[0]}"] = path
    try:
        # an `include` would make the gateway read any local file an update names (a probe of the
        # host's files), so pattern files must be self-contained
        rules = yara.compile(filepaths=sources, includes=False)
    except yara.SyntaxError as exc:
        raise _yara_config_error(str(exc), paths) from None
    except yara.Error as exc:
        raise ConfigError(f"YARA rules could not be loaded: {exc}", paths[0]) from None
    _check_yara_meta(rules, paths)
    return rules


def _yara_config_error(message: str, paths: list[str]) -> ConfigError:
    match = _YARA_ERROR.match(message)
    if match:
        text = match["message"]
        if text.strip() == _YARA_INCLUDE_REFUSED:
            return ConfigError(f"YARA: {INCLUDE_NOT_ALLOWED}", match["file"], int(match["line"]))
        return ConfigError(f"YARA: {text}", match["file"], int(match["line"]))
    return ConfigError(f"YARA: {message}", paths[0] if len(paths) == 1 else None)


def _check_yara_meta(rules, paths: list[str]) -> None:
    """A rule's `category` meta must be one we know, so a typo does not silently fail a rule."""
    for rule in rules:
        value = rule.meta.get("category")
        if value is None:
            continue
        if not isinstance(value, str) or normalise_category(value) is None:
            path, line = _rule_location(paths, rule.identifier, str(value))
            raise ConfigError(f"YARA rule {rule.identifier}: meta category {value!r} is not one of "
                              f"{', '.join(CATEGORIES)}", path, line)


def _rule_location(paths: list[str], identifier: str, value: str) -> tuple[str | None, int | None]:
    """(file, line) of `rule <identifier>`; compiled rules do not keep where they came from, so the
    files are searched (one that also holds the bad value wins when several define the name)."""
    pattern = re.compile(rf"\brule\s+{re.escape(identifier)}\b")
    found = []
    for path in paths:
        lines = _read_lines(path)
        for number, line in enumerate(lines, start=1):
            if pattern.search(line):
                found.append((value in "\n".join(lines), path, number))
                break
    if not found:
        return None, None
    found.sort(key=lambda item: not item[0])
    return found[0][1], found[0][2]


# --- the largest payload the YARA rules can match, read from their sources ----------------------

# A YARA rule whose condition is, at its top level, `filesize <= N and ...` (or `... and filesize < N`)
# cannot match a longer payload: the conjunction is false whatever the rest says. When every rule of
# the set has such a conjunct, a part longer than the largest N needs no YARA call at all (a call
# releases and retakes the GIL, a hand-off whenever other connection threads wait for it). Anything
# this reader is not sure of gives no bound, and then every part is matched as before.

_YARA_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<line_comment>//[^\n]*)
  | (?P<block_comment>/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<regex>/(?:[^/\\\n]|\\.)+/[a-zA-Z]*)
  | (?P<number>0x[0-9a-fA-F]+|0o[0-7]+|\d+(?:KB|MB)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<operator><=|>=|==|!=|<<|>>|\.\.|[-+*\\%&|^~<>=:,.()\[\]{}])
  | (?P<variable>[$#@!][A-Za-z0-9_]*\*?)
""", re.S | re.X)
_SIZE_UNITS = {"KB": 1024, "MB": 1024 * 1024}


def _yara_tokens(text: str) -> list[tuple[str, str]] | None:
    """(kind, text) of the significant tokens of a YARA file; None for anything unexpected. A hex
    string (`= { ... }` in a strings section) is one token."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if tokens and tokens[-1] == ("operator", "=") and text[position] == "{" and _in_strings(tokens):
            end = text.find("}", position)
            body = text[position + 1:end]
            if end < 0 or "/" in body or '"' in body:
                return None           # a comment or string inside a hex string: not read here
            tokens.append(("hex", text[position:end + 1]))
            position = end + 1
            continue
        match = _YARA_TOKEN.match(text, position)
        if match is None:
            return None
        kind = match.lastgroup
        if kind not in ("space", "line_comment", "block_comment"):
            tokens.append((kind, match.group()))
        position = match.end()
    return tokens


def _in_strings(tokens) -> bool:
    """Whether the tokens so far end inside a rule's strings: section."""
    for index in range(len(tokens) - 1, 0, -1):
        if tokens[index] == ("operator", ":") and tokens[index - 1][0] == "word":
            section = tokens[index - 1][1]
            if section in ("strings", "condition", "meta"):
                return section == "strings"
    return False


def _yara_number(text: str) -> int | None:
    for unit, factor in _SIZE_UNITS.items():
        if text.endswith(unit):
            return int(text[:-len(unit)]) * factor
    if text.startswith("0x"):
        return int(text, 16)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text) if text.isdigit() else None


def _condition_size_bound(condition: list[tuple[str, str]]) -> int | None:
    """N when the condition is a conjunction (`and` at its top level, no top-level `or`) one of
    whose terms is exactly `filesize <= N` or `filesize < N`; None otherwise."""
    terms, term, depth = [], [], 0
    for kind, text in condition:
        if text in ("(", "["):
            depth += 1
        elif text in (")", "]"):
            depth -= 1
            if depth < 0:
                return None
        if depth == 0 and kind == "word" and text == "or":
            return None
        if depth == 0 and kind == "word" and text == "and":
            terms.append(term)
            term = []
        else:
            term.append((kind, text))
    terms.append(term)
    if depth != 0:
        return None
    bounds = []
    for term in terms:
        if len(term) == 3 and term[0] == ("word", "filesize") and term[1][1] in ("<=", "<") \
                and term[2][0] == "number":
            number = _yara_number(term[2][1])
            if number is not None:
                bounds.append(number if term[1][1] == "<=" else number - 1)
    return min(bounds) if bounds else None


def yara_rule_bounds(text: str) -> list[tuple[str, int | None]] | None:
    """(identifier, size bound or None) of each rule of one YARA file, in order; None when the
    file holds something this reader does not follow."""
    tokens = _yara_tokens(text)
    if tokens is None:
        return None
    rules = []
    index = 0
    while index < len(tokens):
        kind, word = tokens[index]
        if kind == "word" and word in ("private", "global"):
            index += 1
            continue
        if kind == "word" and word == "import" and index + 1 < len(tokens) and tokens[index + 1][0] == "string":
            index += 2
            continue
        if not (kind == "word" and word == "rule" and index + 1 < len(tokens) and tokens[index + 1][0] == "word"):
            return None
        identifier = tokens[index + 1][1]
        index += 2
        if index < len(tokens) and tokens[index] == ("operator", ":"):      # tags
            index += 1
            while index < len(tokens) and tokens[index][0] == "word":
                index += 1
        if index >= len(tokens) or tokens[index] != ("operator", "{"):
            return None
        # the condition: after `condition :`, up to the rule's closing brace (a condition holds none)
        start = None
        for position in range(index + 1, len(tokens) - 1):
            if tokens[position] == ("word", "condition") and tokens[position + 1] == ("operator", ":"):
                start = position + 2
                break
            if tokens[position] == ("operator", "}"):
                return None
        if start is None:
            return None
        end = start
        while end < len(tokens) and tokens[end] != ("operator", "}"):
            if tokens[end] == ("operator", "{"):
                return None
            end += 1
        if end >= len(tokens):
            return None
        rules.append((identifier, _condition_size_bound(tokens[start:end])))
        index = end + 1
    return rules


def read_sources(paths: list[str]) -> list[str] | None:
    """The text of each YARA file, or None when one cannot be read."""
    try:
        return [read_text(path, "signature file") for path in paths]
    except ConfigError:
        return None


def yara_size_bound(paths: list[str], rules, sources_before: list[str] | None = None) -> int | None:
    """The longest payload a rule of the compiled `rules` (from these files, in this order) can
    match; None when some rule that is not private has a condition that does not bound it (or
    the sources are not understood).
    The rules the files are read to hold must be exactly the compiled ones, in order.
    sources_before: the files' text read before they were compiled; when given, a file whose text
    differs now (an update swapped it meanwhile) gives no bound, so the bound is always read from
    the very text that was compiled."""
    if rules is None:
        return None
    sources = read_sources(paths)
    if sources is None or (sources_before is not None and sources != sources_before):
        return None
    found = []
    for text in sources:
        try:
            read = yara_rule_bounds(text)
        except (RecursionError, ValueError):
            return None
        if read is None:
            return None
        found += read
    compiled = list(rules)
    if [identifier for identifier, _ in found] != [rule.identifier for rule in compiled]:
        return None
    # a private rule is never a match of its own (other rules may use it): only the others need a bound
    reported = [bound for (_, bound), rule in zip(found, compiled) if not getattr(rule, "is_private", False)]
    if not reported or any(bound is None or bound < 0 for bound in reported):
        return None
    return max(reported)


@dataclass
class SignatureSet:
    """Everything the built-in backend matches, loaded from one pattern directory."""

    directory: str
    hashes: HashSignatures
    yara_rules: object = None
    files: tuple = ()
    # no YARA rule can match a longer payload (yara_size_bound); None: no such bound
    yara_max_size: int | None = None

    @property
    def empty(self) -> bool:
        return self.hashes.count == 0 and self.yara_rules is None

    def needs_yara(self, payload: bytes) -> bool:
        """Whether a YARA rule may match payload: some rule is loaded, and payload is not longer
        than every rule's own filesize bound allows (yara_size_bound)."""
        return (self.yara_rules is not None and bool(payload)
                and (self.yara_max_size is None or len(payload) <= self.yara_max_size))

    def scan(self, payload: bytes, timeout: float | None = None) -> list[Detection]:
        """Every signature that matches payload (hash signatures first: they cost nothing for most sizes)."""
        if self.needs_yara(payload):
            with YARA_THREADS:
                return self._scan(payload, timeout, True)
        return self._scan(payload, timeout, False)

    def scan_many(self, payloads: list[bytes], timeout: float | None = None) -> list[list[Detection]]:
        """scan() of each payload; a message's parts take the YARA slot once, not once each, and a
        part that no hash signature's size and no YARA rule can match costs a dict lookup."""
        by_size = self.hashes.by_size
        any_size = ANY_SIZE in by_size
        has_yara = self.yara_rules is not None
        limit = self.yara_max_size
        results: list = []
        work = []                 # (index, payload, whether YARA may match it): needs_yara inline
        for payload in payloads:
            size = len(payload)
            yara_too = has_yara and size > 0 and (limit is None or size <= limit)
            if yara_too or any_size or size in by_size:
                work.append((len(results), payload, yara_too))
            results.append([])
        if not work:
            return results
        if any(yara_too for _, _, yara_too in work):
            with YARA_THREADS:
                for index, payload, yara_too in work:
                    results[index] = self._scan(payload, timeout, yara_too)
        else:
            for index, payload, _ in work:
                results[index] = self._scan(payload, timeout, False)
        return results

    def _scan(self, payload: bytes, timeout: float | None, yara_too: bool) -> list[Detection]:
        names = self.hashes.lookup(payload) if self.hashes.by_size else ()
        if not names and not yara_too:
            return []
        found = [Detection(name, category_from_name(name), "hash") for name in names]
        if yara_too:
            seconds = max(1, int(timeout)) if timeout else 60
            matches = self.yara_rules.match(data=payload, timeout=seconds, fast=True)
            for match in matches:
                meta = match.meta
                name = str(meta.get("name") or match.rule)
                category = normalise_category(str(meta.get("category", ""))) or category_from_name(name)
                found.append(Detection(name, category, "yara"))
        unique, seen = [], set()
        for detection in found:
            if detection.name not in seen:
                seen.add(detection.name)
                unique.append(detection)
        return unique


def signature_files(directory: str) -> list[str]:
    """The signature files of a directory, by name (other files, such as a README, are ignored)."""
    extensions = (*HASH_EXTENSIONS, *YARA_EXTENSIONS)
    paths = [path for path in glob.glob(os.path.join(glob.escape(directory), "*"))
             if os.path.splitext(path)[1].lower() in extensions and os.path.isfile(path)]
    return sorted(paths, key=os.path.basename)


def load_signatures(directory: str) -> SignatureSet:
    """Read and compile every signature file of directory; ConfigError with file and line when one is bad."""
    files = signature_files(directory)
    hashes = HashSignatures()
    yara_paths = []
    for path in files:
        extension = os.path.splitext(path)[1].lower()
        if extension in HASH_EXTENSIONS:
            load_hash_file(path, hashes)
        else:
            yara_paths.append(path)
    sources_before = read_sources(yara_paths)
    yara_rules = compile_yara(yara_paths)
    bound = yara_size_bound(yara_paths, yara_rules, sources_before) if sources_before is not None else None
    return SignatureSet(directory, hashes, yara_rules, tuple(files), bound)


# (directory, files' (path, mtime_ns, size)) -> SignatureSet: engines are rebuilt with every rule
# (re)load, and compiling YARA each time would make a reload cost what the patterns cost
_cache: dict[tuple, SignatureSet] = {}
_cache_lock = threading.Lock()
_CACHE_SIZE = 4


def cached_signatures(directory: str) -> SignatureSet:
    """load_signatures, reused while no file of the directory changed."""
    key = (directory, tuple(_file_stamp(path) for path in signature_files(directory)))
    with _cache_lock:
        found = _cache.get(key)
    if found is not None:
        return found
    loaded = load_signatures(directory)
    with _cache_lock:
        while len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        _cache[key] = loaded
    return loaded


def _file_stamp(path: str) -> tuple:
    try:
        stat = os.stat(path)
    except OSError:
        return (path, None, None)
    return (path, stat.st_mtime_ns, stat.st_size)
