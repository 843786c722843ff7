"""Inputs and outputs of the policy engine: the envelope it routes on and the verdict it returns."""

from __future__ import annotations

from dataclasses import dataclass, field

# Terminal actions, strongest first (SPEC §4: reject > tempfail > delete > quarantine > deliver).
TERMINAL_ACTIONS = ("reject", "tempfail", "delete", "quarantine", "deliver")
ACTION_STRENGTH = {name: len(TERMINAL_ACTIONS) - i for i, name in enumerate(TERMINAL_ACTIONS)}


@dataclass
class Envelope:
    """The SMTP envelope and client facts of one message."""

    sender: str = ""                       # MAIL FROM address without <>; "" is the null sender
    recipients: list[str] = field(default_factory=list)
    client_ip: str | None = None
    client_name: str | None = None         # verified client hostname as the MTA passes it
    helo: str | None = None
    queue_id: str | None = None
    reputation: list[str] = field(default_factory=list)   # DNSBL categories of the client (sender filtering)


@dataclass(frozen=True)
class Modification:
    """A change made to a delivered message.

    kind is the action name; args is a tuple:
      add_header        (name, value)
      tag_subject       (prefix,)
      insert_stamp      (text,)
      strip_attachments (path, ...)  "/"-joined paths of the parts the policy matched; () = every attachment
      bcc               (address, ...)
      reroute           (address, ...)
      archive           (area,)
      notify            (recipients-tuple, template)
    """

    kind: str
    args: tuple = ()

    def to_json(self) -> dict:
        return {self.kind: list(self.args)}


@dataclass
class Verdict:
    """What the policy engine decided for one message."""

    action: str = "deliver"                 # one of TERMINAL_ACTIONS: the strongest that matched
    rules: list[str] = field(default_factory=list)        # every matched policy, in evaluation order
    reply: tuple[str, str, str] | None = None             # (code, xcode, text) for reject/tempfail
    quarantine_area: str | None = None      # set when action == "quarantine"
    deciding_rule: str | None = None        # the policy whose terminal action won
    modifications: list[Modification] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)    # evidence: {"rule", "condition", "detail", ...}
