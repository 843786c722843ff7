"""The URL reputation engine: the message's URLs against URI blocklists and the local blocked list.

prepare() extracts and normalises every URL, matches the local list, asks
the DNS zones about the first max_urls distinct hosts concurrently within
the engine's timeout, and leaves the result in scratch; check() answers
`url.reputation` conditions from it. Listings also go to
scratch["url.findings"] for the spam engine to score.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ...errors import ImssError
from .blocked import DEFAULT_CATEGORY, BlockedList
from .config import UrlConfig
from .extract import FoundUrl, extract_urls
from .lookup import UrlLookups, query_names

SCRATCH_SCAN = "url.scan"            # this engine's own result (UrlScan)
SCRATCH_FINDINGS = "url.findings"    # listings as plain dicts: url, domain, zone, category, detail (read by spam)
MISMATCH = "mismatch"                # a link whose text shows another site than it opens
# categories that come from the message alone: a DNS failure cannot hide them
LOCAL_ONLY_CATEGORIES = frozenset({MISMATCH})
# what the engine itself produces, whatever the zones and lists say
BUILTIN_CATEGORIES = frozenset({DEFAULT_CATEGORY, MISMATCH})


class UrlLookupError(ImssError):
    """Some URI blocklist could not be asked: a URL found clean may not be."""

    default_message = "URL reputation lookup failed"


@dataclass
class UrlScan:
    findings: list[dict] = field(default_factory=list)     # listings (zones and blocked list)
    mismatches: list[dict] = field(default_factory=list)   # category "mismatch"
    errors: list[str] = field(default_factory=list)        # "zone: why", one per failing zone
    urls: int = 0                                          # distinct URLs found
    hosts_looked_up: int = 0


def _finding(url: FoundUrl, name: str, category: str, domain: str, detail: str) -> dict:
    return {"detail": detail, "name": name, "category": category, "url": url.normal.url,
            "domain": domain, "part": list(url.part)}


class UrlEngine:
    uses = ()
    blocking = True         # waits on DNS: prepare() runs in the engine pool, beside the others

    def __init__(self, options, config: UrlConfig, blocked: BlockedList, dns_config):
        self.options = options
        self.config = config
        self.blocked = blocked
        self.lookups = UrlLookups(config.zones, dns_config)

    def reset_after_fork(self) -> None:
        self.lookups.reset_after_fork()

    # -- the work ----------------------------------------------------------

    def prepare(self, model, envelope, scratch: dict) -> None:
        if SCRATCH_SCAN in scratch:
            return
        started = time.monotonic()
        found = extract_urls(model)
        scan = UrlScan(urls=len(found))
        self._match_blocked(found, scan)
        self._note_mismatches(found, scan)
        self._look_up(found, scan, deadline=started + self.options.timeout)
        scratch[SCRATCH_FINDINGS] = [{"url": f["url"], "domain": f["domain"], "zone": f["name"],
                                      "category": f["category"], "detail": f["detail"]} for f in scan.findings]
        scratch[SCRATCH_SCAN] = scan

    def _match_blocked(self, found: list[FoundUrl], scan: UrlScan) -> None:
        if not len(self.blocked):
            return
        seen = set()
        for url in found:
            hit = self.blocked.match(url.normal)
            if hit is None or (url.normal.url, hit) in seen:
                continue
            seen.add((url.normal.url, hit))
            category, entry = hit
            scan.findings.append(_finding(url, "blocked", category, url.normal.host,
                                          f"{url.normal.url} is on the local blocked list ({entry}: {category})"))

    def _note_mismatches(self, found: list[FoundUrl], scan: UrlScan) -> None:
        for url in found:
            if url.shown_host:
                scan.mismatches.append(_finding(
                    url, "link-text", MISMATCH, url.normal.host,
                    f"link text shows {url.shown_host} but the link opens {url.normal.host}"))

    def _look_up(self, found: list[FoundUrl], scan: UrlScan, deadline: float) -> None:
        if not self.config.zones:
            return
        first_by_host: dict[str, FoundUrl] = {}
        for url in found:
            if url.normal.host not in first_by_host:
                if len(first_by_host) >= self.config.max_urls:
                    break     # the bound on lookups per message; later hosts are not asked
                first_by_host[url.normal.host] = url
        scan.hosts_looked_up = len(first_by_host)
        asked: dict[tuple[str, str], list[FoundUrl]] = {}
        for url in first_by_host.values():
            for zone in self.config.zones:
                for name in query_names(url.normal, zone):
                    asked.setdefault((zone.zone, name), []).append(url)
        if not asked:
            return
        results = self.lookups.lookup_all(list(asked), timeout=deadline - time.monotonic())
        failed_zones = {}
        reported = set()
        for (zone, name), result in results.items():
            if result.status == "error":
                failed_zones.setdefault(zone, result.error or "error")
                continue
            if result.status != "listed":
                continue
            domain = name[: -len(zone) - 1]
            for url in asked[(zone, name)]:
                for category in result.categories:
                    if (url.normal.host, zone, category) in reported:
                        continue
                    reported.add((url.normal.host, zone, category))
                    scan.findings.append(_finding(
                        url, zone, category, domain,
                        f"{url.normal.url} listed by {zone} as {category} "
                        f"({domain}: {', '.join(result.addresses)})"))
        scan.errors = [f"{zone}: {why}" for zone, why in failed_zones.items()]

    # -- what it can answer ------------------------------------------------

    def categories(self) -> frozenset[str]:
        """Every category a finding of this engine can have: the zones' codes and bits (or the zone's
        name when it has neither), the blocked list's categories, and the built-in ones."""
        found = set(BUILTIN_CATEGORIES)
        for zone in self.config.zones:
            if zone.codes:
                found.update(code.category for code in zone.codes)
            elif zone.bitmask:
                found.update(category for _, category in zone.bitmask)
            else:
                found.add(zone.zone)
        found.update(category for category, _ in self.blocked.exact.values())
        found.update(category for category, _ in self.blocked.suffix.values())
        found.update(category for *_, category, _ in self.blocked.globs)
        return frozenset(found)

    def condition_warnings(self, condition: str, argument) -> list[str]:
        """check-config warnings for a url.reputation category nothing here produces (likely a typo:
        the condition would silently never hold for it)."""
        if condition != "url.reputation" or not argument:
            return []
        known = self.categories()
        return [f"url.reputation category {category!r} is produced by no zone code or bit, no blocked-list "
                f"entry and no built-in category; known: {', '.join(sorted(known))}"
                for category in argument if category not in known]

    # -- the condition ---------------------------------------------------

    def check(self, condition: str, argument, model, envelope, scratch: dict) -> list[dict]:
        """Findings of `url.reputation`: the listed categories asked for, or every listing for `true`
        (mismatch only when asked by name). When a zone failed and nothing matched, the answer is
        unknown: UrlLookupError, answered per the engine's on_error."""
        if SCRATCH_SCAN not in scratch:
            self.prepare(model, envelope, scratch)
        scan: UrlScan = scratch[SCRATCH_SCAN]
        wanted = set(argument or ())
        if not wanted:
            matched = list(scan.findings)
        else:
            matched = [f for f in scan.findings + scan.mismatches if f["category"] in wanted]
        if not matched and scan.errors and not (wanted and wanted <= LOCAL_ONLY_CATEGORIES):
            raise UrlLookupError("URL reputation unknown: " + "; ".join(scan.errors))
        return matched
