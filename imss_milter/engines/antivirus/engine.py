"""What both antivirus backends share: scan every part once per message, answer `virus` conditions by category.

A backend supplies scan_parts(model) -> [(path, name, category)]; this
class turns them into findings, keeps them in the per-message scratch
(prepare() does the scanning concurrently with other engines, check()
only filters) and drops a finding on a container (an archive, an attached
message) when the same signature was found on one of its members, so the
finding names the file that carries it.
"""

from __future__ import annotations

from .categories import group_of, matches

FINDINGS = ("antivirus", "findings")
UNSCANNED = ("antivirus", "unscanned")


def finding(path, name: str, category: str) -> dict:
    where = "/".join(path) or "message"
    return {
        "detail": f"{name} ({category}) in {where}",
        "name": name,
        "category": category,
        "group": group_of(category),
        "part": where,
        "path": list(path),          # strip_attachments removes the parts findings name
    }


def innermost(findings: list[dict]) -> list[dict]:
    """Findings without those on a container whose member has the same signature."""
    kept = []
    for item in findings:
        path = item["path"]
        if any(other is not item and other["name"] == item["name"] and len(other["path"]) > len(path)
               and other["path"][:len(path)] == path for other in findings):
            continue
        kept.append(item)
    return kept


class AntivirusEngine:
    """Base of the backends; a subclass implements scan_parts(model)."""

    backend = ""

    def __init__(self, options):
        self.options = options

    def scan_parts(self, model) -> list[tuple]:
        raise NotImplementedError

    def scan(self, model) -> list[dict]:
        """Every detection in the message, as findings (all categories)."""
        found = [finding(path, name, category) for path, name, category in self.scan_parts(model)]
        unique, seen = [], set()
        for item in innermost(found):
            key = (item["part"], item["name"])
            if key not in seen:
                seen.add(key)
                unique.append(item)
        return unique

    def prepare(self, model, envelope, scratch: dict) -> None:
        scratch[FINDINGS] = self.scan(model)

    def check(self, condition: str, argument, model, envelope, scratch: dict) -> list[dict]:
        findings = scratch.get(FINDINGS)
        if findings is None:                 # asked without prepare() (a caller that skips it)
            findings = scratch[FINDINGS] = self.scan(model)
        return [item for item in findings if matches(tuple(argument or ()), item["category"])]

    def reset_after_fork(self) -> None:
        """Nothing held by default; the clamd backend drops its parent's connections."""
