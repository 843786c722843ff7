"""Update manifests: the JSON a source publishes (components, versions, files with SHA-256 and size),
its detached Ed25519 signature, and the key handling publishers and gateways share. Pure: no I/O
beyond reading a key file.

    {"format": 1, "created": "2024-06-01T12:00:00Z",
     "components": {"dlp": {"version": "2024.06.01",
                            "files": [{"path": "00-identifiers.yaml", "sha256": "<hex>", "size": 1234}]}}}

A file's bytes are published at <source>/<component>/<version>/<path>; the
signature of the exact manifest.json bytes at <source>/manifest.json.sig
(base64 text, or the 64 raw bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass

from ..errors import ImssError

MANIFEST_FORMAT = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
COMPONENT_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_FILES_PER_COMPONENT = 10000


class UpdateError(ImssError):
    """An update or rollback could not be done; the current pattern set is untouched."""

    default_message = "pattern update failed"


@dataclass(frozen=True)
class FileEntry:
    path: str          # relative to the component's version directory, '/'-separated
    sha256: str
    size: int


@dataclass(frozen=True)
class ComponentEntry:
    name: str
    version: str
    files: tuple[FileEntry, ...]

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files)


@dataclass(frozen=True)
class Manifest:
    components: dict          # name -> ComponentEntry
    created: str | None = None


def check_version(version) -> str:
    """A version is also a directory name: letters, digits and . _ + - only."""
    if not isinstance(version, str) or not VERSION_RE.match(version) or version in (".", ".."):
        raise UpdateError(f"invalid version {version!r} (expected letters, digits, '.', '_', '+', '-', "
                          "at most 64 characters)")
    return version


def check_relative_path(path) -> str:
    """A manifest file path may not climb out of its directory, be absolute or hide as a dot file."""
    if not isinstance(path, str) or not path or len(path) > 1024:
        raise UpdateError(f"invalid file path {path!r} in the manifest")
    segments = path.split("/")
    for segment in segments:
        if not _SEGMENT_RE.match(segment) or segment in (".", ".."):
            raise UpdateError(f"invalid file path {path!r} in the manifest (expected names of letters, "
                              "digits and . _ + - separated by '/', no '..', no leading dot)")
    return path


def parse_manifest(data: bytes) -> Manifest:
    """The manifest's bytes as a Manifest; UpdateError saying what is wrong (never a traceback)."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UpdateError(f"the manifest is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise UpdateError("the manifest must be a JSON object")
    if raw.get("format") != MANIFEST_FORMAT:
        raise UpdateError(f"unsupported manifest format {raw.get('format')!r} (expected {MANIFEST_FORMAT})")
    components = raw.get("components")
    if not isinstance(components, dict) or not components:
        raise UpdateError("the manifest must list at least one component under \"components\"")
    parsed = {}
    for name, entry in components.items():
        if not COMPONENT_RE.match(name):
            raise UpdateError(f"invalid component name {name!r} in the manifest")
        if not isinstance(entry, dict):
            raise UpdateError(f"component {name}: expected an object with version and files")
        version = check_version(entry.get("version"))
        files = entry.get("files")
        if not isinstance(files, list) or not files or len(files) > MAX_FILES_PER_COMPONENT:
            raise UpdateError(f"component {name}: expected a non-empty list of files")
        seen: set[str] = set()
        parsed_files = []
        for item in files:
            parsed_files.append(_file_entry(name, item))
            key = parsed_files[-1].path.lower()
            if key in seen:
                raise UpdateError(f"component {name}: file {parsed_files[-1].path!r} is listed twice")
            seen.add(key)
        parsed[name] = ComponentEntry(name, version, tuple(parsed_files))
    created = raw.get("created")
    return Manifest(parsed, created if isinstance(created, str) else None)


def _file_entry(component: str, item) -> FileEntry:
    if not isinstance(item, dict):
        raise UpdateError(f"component {component}: each file must be an object with path, sha256 and size")
    path = check_relative_path(item.get("path"))
    digest = item.get("sha256")
    if not isinstance(digest, str) or not _SHA256_RE.match(digest.lower()):
        raise UpdateError(f"component {component}: file {path}: sha256 must be 64 hex digits")
    size = item.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise UpdateError(f"component {component}: file {path}: size must be a whole number of bytes")
    return FileEntry(path, digest.lower(), size)


def manifest_bytes(components: dict, created: str) -> bytes:
    """The canonical manifest for {name: (version, [(path, bytes_sha256, size)])}, as published."""
    document = {"format": MANIFEST_FORMAT, "created": created, "components": {
        name: {"version": version, "files": [{"path": p, "sha256": d, "size": s} for p, d, s in files]}
        for name, (version, files) in sorted(components.items())}}
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def sha256_file(path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# -- keys and signatures -------------------------------------------------------------

def load_public_key(value: str):
    """An Ed25519 public key from the 32 raw bytes in base64, PEM text, or a PEM file path.

    Decided by content, not by a leading '/': base64 may start with '/' too (1 key in 64)."""
    text = value.strip()
    raw = _raw_key_bytes(text)
    if raw is not None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        return Ed25519PublicKey.from_public_bytes(raw)
    if text.startswith("-----BEGIN"):
        return _pem_public_key(text, "updates.public_key")
    if "\n" in text or not text:
        raise UpdateError("updates.public_key: expected 32 bytes in base64, PEM text or a PEM file path")
    try:
        with open(text, "rb") as handle:
            content = handle.read(1 << 16).decode("ascii", "replace").strip()
    except OSError as exc:
        raise UpdateError(f"cannot read public key file {text}: {exc.strerror} (updates.public_key: "
                          "expected PEM, a PEM file path, or 32 bytes in base64)") from None
    return _pem_public_key(content, text)


def _raw_key_bytes(text: str) -> bytes | None:
    """The 32 bytes when text is base64 of exactly 32 bytes, else None."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def _pem_public_key(text: str, origin: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    try:
        key = serialization.load_pem_public_key(text.encode("ascii", "replace"))
    except ValueError as exc:
        raise UpdateError(f"{origin}: expected an Ed25519 public key in PEM (-----BEGIN PUBLIC KEY-----): "
                          f"{exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UpdateError(f"{origin}: expected an Ed25519 public key, found another key type")
    return key


def load_private_key(path: str):
    """A publisher's Ed25519 private key (PKCS#8 PEM, unencrypted)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    try:
        with open(path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
    except OSError as exc:
        raise UpdateError(f"cannot read signing key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise UpdateError(f"{path}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UpdateError(f"{path}: the signing key must be Ed25519")
    return key


def sign(private_key, data: bytes) -> bytes:
    """The detached signature file's content: base64 of the Ed25519 signature, one line."""
    return base64.b64encode(private_key.sign(data)) + b"\n"


def decode_signature(blob: bytes) -> bytes:
    if len(blob) == 64:
        return blob
    try:
        raw = base64.b64decode(blob.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 64:
        raise UpdateError("the manifest signature is not an Ed25519 signature (64 bytes, or base64 of them)")
    return raw


def verify(public_key, data: bytes, signature_blob: bytes) -> None:
    """UpdateError unless signature_blob signs data with public_key."""
    from cryptography.exceptions import InvalidSignature
    try:
        public_key.verify(decode_signature(signature_blob), data)
    except InvalidSignature:
        raise UpdateError("bad signature: the manifest was not signed by the configured key") from None


def public_key_texts(private_key) -> tuple[str, str]:
    """(PEM, raw base64) of a private key's public half, for publishers to hand out."""
    from cryptography.hazmat.primitives import serialization
    public = private_key.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return pem.decode("ascii"), base64.b64encode(raw).decode("ascii")
