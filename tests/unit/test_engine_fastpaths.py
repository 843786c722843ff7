"""Fast paths of the engines and the policy evaluation give the answers of the general code they replace."""

from __future__ import annotations

import random
import re

import pytest

from imss_milter.policy.conditions import basename, engines_of, extensions
from tests.policy.builders import inbound, rules

ENGINE_RULES = """\
    address_groups:
      partners: ["*@partner.test"]
    policies:
      - {name: a, route: {from: any, to: internal}, when: {virus: true}, actions: [{add_header: {name: X-A, value: "1"}}]}
      - {name: b, route: {from: any, to: any}, when: {any: [{spam: {level: low}}, {not: {dlp: [pii]}}]},
         actions: [{add_header: {name: X-B, value: "1"}}]}
      - {name: c, route: {from: partners, to: internal}, when: {url.reputation: true}, actions: [{add_header: {name: X-C, value: "1"}}]}
      - {name: d, route: {from: any, to: internal}, enabled: false, when: {sender.reputation: true},
         actions: [{add_header: {name: X-D, value: "1"}}]}
      - {name: e, route: {from: any, to: internal}, actions: [{add_header: {name: X-E, value: "1"}}]}
      - {name: f, route: {from: any, to: "!internal"}, when: {all: [{subject: [zz]}, {virus: [spyware]}]},
         actions: [{add_header: {name: X-F, value: "1"}}]}
    """


def test_engines_for_is_the_union_of_engines_of_the_routed_policies(tmp_path):
    ruleset = rules(tmp_path, ENGINE_RULES)
    envelopes = [("x@partner.test", ["u@example.com"]), ("x@outside.test", ["u@example.com"]),
                 ("x@outside.test", ["u@elsewhere.test"]), ("", ["u@sub.example.com", "v@elsewhere.test"]),
                 ("me@example.com", ["you@outside.test"]), ("", [])]
    for sender, recipients in envelopes:
        env = inbound(sender=sender, recipients=recipients)
        routed = ruleset.routed(env)
        expected = set()
        for policy in routed:
            expected |= engines_of(policy.condition)
        assert ruleset.engines_for(env, routed) == expected
        assert ruleset.engines_for(env) == expected
        # the caller may change the answer: it must be a set of its own
        ruleset.engines_for(env, routed).add("changed")
        assert "changed" not in ruleset.engines_for(env, routed)


def _basename_by_regex(name: str) -> str:
    return re.split(r"[\\/]", name)[-1].rstrip(". \t")


def _extensions_by_regex(name: str) -> list[str]:
    pieces = _basename_by_regex(name).lower().split(".")[1:]
    if not pieces:
        return []
    found = [pieces[-1].strip()]
    found += [p.strip() for p in reversed(pieces[:-1]) if re.match(r"^[a-z0-9]{1,8}$", p.strip())]
    return [e for e in found if e]


NAMES = ["", ".", "..", "a", "a.exe", "a.pdf.exe", "C:\\temp\\x.scr", "dir/sub\\file.tar.gz", "/", "\\",
         "a/", "a\\", "trailing.exe. . ", "x/.hidden", "weird\\/mix/\\.doc", "évil.ｅｘｅ", "a\tb.exe\t",
         "many.dots.in.a.name.js", "\u202egnp.exe", "a/b/c/", "no ext here", "..\\..\\win.ini"]


@pytest.mark.parametrize("seed", range(5))
def test_basename_and_extensions_match_the_regex_split(seed):
    rng = random.Random(seed)
    alphabet = "ab./\\ \t.xe\u00e9\u202eE"
    names = NAMES + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16))) for _ in range(2000)]
    for name in names:
        assert basename(name) == _basename_by_regex(name), name
        assert extensions(name) == _extensions_by_regex(name), name
