"""DLP templates: all/any/not trees of identifier clauses with min_count and distance, and their evaluation.

A clause {identifier, min_count, distance} holds when the message has at
least min_count matches of the identifier (counted over all its texts:
subject, body, each attachment). `distance` makes only nearby matches
count, within one text:
- in an `all:` list, a clause's matches count only when they lie within
  `distance` characters of a match of another clause of that list
  ("a card number with 'cvv' within 50 characters");
- anywhere else, `distance` asks for min_count (at least 2) matches each
  within `distance` characters of the next ("keywords near each other").
Evaluation returns the matches that support the result (for the
incident), or None when the template does not hold.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# Where a match was found: (text index, Match). Text indexes are given by the engine.
Located = tuple[int, object]


@dataclass(frozen=True)
class Clause:
    identifier: str
    min_count: int = 1
    distance: int | None = None

    def describe(self) -> str:
        extra = f" x{self.min_count}" if self.min_count > 1 else ""
        return f"{self.identifier}{extra}" + (f" within {self.distance}" if self.distance is not None else "")


@dataclass(frozen=True)
class AllOf:
    children: tuple


@dataclass(frozen=True)
class AnyOf:
    children: tuple


@dataclass(frozen=True)
class NotOf:
    child: object


Node = Clause | AllOf | AnyOf | NotOf


def identifiers_of(node: Node) -> set[str]:
    if isinstance(node, Clause):
        return {node.identifier}
    if isinstance(node, NotOf):
        return identifiers_of(node.child)
    return set().union(*(identifiers_of(child) for child in node.children))


def evaluate(node: Node, found: dict[str, list[Located]]) -> list[Located] | None:
    """The supporting matches when node holds over `found` (identifier -> located matches), else None."""
    if isinstance(node, Clause):
        located = found.get(node.identifier, [])
        if node.distance is not None:
            located = _largest_cluster(located, node.distance, max(node.min_count, 2))
        return located if len(located) >= node.min_count else None
    if isinstance(node, NotOf):
        return [] if evaluate(node.child, found) is None else None
    if isinstance(node, AnyOf):
        support, held = [], False
        for child in node.children:
            result = evaluate(child, found)
            if result is not None:
                held = True
                support += result
        return support if held else None
    return _evaluate_all(node, found)


def _evaluate_all(node: AllOf, found) -> list[Located] | None:
    near_clauses = [c for c in node.children if isinstance(c, Clause) and c.distance is not None]
    others = [c for c in node.children if c not in near_clauses]
    support = []
    sibling_matches: dict[int, list[Located]] = {}
    for index, child in enumerate(node.children):
        if child in near_clauses:
            continue
        result = evaluate(child, found)
        if result is None:
            return None
        support += result
        sibling_matches[index] = result
    for index, clause in enumerate(node.children):
        if clause not in near_clauses:
            continue
        siblings = [m for i, ms in sibling_matches.items() if i != index for m in ms]
        siblings += [m for other in near_clauses if other is not clause
                     for m in found.get(other.identifier, [])]
        if not others and len(near_clauses) == 1:
            result = evaluate(clause, found)          # alone: near each other
        else:
            near = _near(found.get(clause.identifier, []), siblings, clause.distance)
            result = near if len(near) >= clause.min_count else None
        if result is None:
            return None
        support += result
    return support


def _near(located: list[Located], others: list[Located], distance: int) -> list[Located]:
    """Matches with a match of `others` in the same text at most `distance` characters away."""
    by_text: dict[int, tuple] = {}
    for text, match in others:
        by_text.setdefault(text, []).append(match)
    for text, matches in by_text.items():
        matches.sort(key=lambda m: m.start)
        by_text[text] = (matches, [m.start for m in matches], max(m.end - m.start for m in matches))
    kept = []
    for text, match in located:
        if text not in by_text:
            continue
        ordered, starts, longest = by_text[text]
        low = bisect.bisect_left(starts, match.start - distance - longest)
        high = bisect.bisect_right(starts, match.end + distance)
        for other in ordered[low:high]:
            if other is match:
                continue
            if max(other.start - match.end, match.start - other.end) <= distance:
                kept.append((text, match))
                break
    return kept


def _largest_cluster(located: list[Located], distance: int, at_least: int) -> list[Located]:
    """The biggest run of matches (one text) each within distance of the previous; [] if shorter than at_least."""
    best: list[Located] = []
    by_text: dict[int, list] = {}
    for text, match in located:
        by_text.setdefault(text, []).append((text, match))
    for entries in by_text.values():
        entries.sort(key=lambda e: e[1].start)
        run = [entries[0]]
        for entry in entries[1:]:
            if entry[1].start - run[-1][1].end <= distance:
                run.append(entry)
            else:
                best = run if len(run) > len(best) else best
                run = [entry]
        best = run if len(run) > len(best) else best
    return best if len(best) >= at_least else []
