"""The built-in backend: hash signatures and YARA rules matched against every part the MIME model exposes."""

from __future__ import annotations

from .engine import AntivirusEngine
from .signatures import SignatureSet


class BuiltinEngine(AntivirusEngine):
    """Matches one SignatureSet (loaded once per build) against each decoded part, archive member and
    nested message part of the model."""

    backend = "builtin"

    def __init__(self, options, signatures: SignatureSet):
        super().__init__(options)
        self.signatures = signatures

    def scan_parts(self, model) -> list[tuple]:
        found = []
        timeout = getattr(self.options, "timeout", None)
        parts = [part for part in model.parts if part.payload]
        # one call for the message's parts: the YARA slot (YARA_THREADS) is taken once
        for part, detections in zip(parts, self.signatures.scan_many([part.payload for part in parts], timeout)):
            for detection in detections:
                found.append((part.path, detection.name, detection.category))
        return found
