"""Spam scoring after DATA, before the durable write.

Rules with weights over the envelope and the header block; server-wide and
per-account sender lists (address or domain). The message score decides
rejection (`spam.reject_score`, 550 5.7.1); per recipient, the score plus that
account's own lists decides inbox or junk (`spam.junk_score`). The verdict is
written into the message as `X-Spam-Score` and `X-Spam-Status`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr, parsedate_tz
from typing import Any, Callable

LIST_WEIGHT = 100.0
MANY_RECIPIENTS = 15
_parser = BytesHeaderParser(policy=compat32)


class SpamRejected(Exception):
    """The message scored at or above spam.reject_score."""

    def __init__(self, score: float, rules: list[str]) -> None:
        super().__init__(f"score {score:.1f} ({', '.join(rules)})")
        self.score, self.rules = score, rules


@dataclass
class SpamVerdict:
    score: float
    rules: list[tuple[str, float]] = field(default_factory=list)
    mailboxes: dict[int, str] = field(default_factory=dict)  # user id -> mailbox

    def headers(self, junkScore: float) -> bytes:
        status = "Yes" if self.score >= junkScore else "No"
        tests = ",".join(f"{name}={weight:g}" for name, weight in self.rules) or "none"
        return (
            f"X-Spam-Score: {self.score:.1f}\r\n"
            f"X-Spam-Status: {status}, score={self.score:.1f} required={junkScore:.1f}"
            f"\r\n\ttests={tests}\r\n"
        ).encode()


def senderOf(headerFrom: str, mailFrom: str) -> str:
    address = parseaddr(headerFrom)[1] or mailFrom
    return address.lower()


def matches(sender: str, entries: set[str]) -> bool:
    """An entry is an address, a domain, or @domain."""
    domain = sender.rpartition("@")[2]
    return sender in entries or domain in entries or f"@{domain}" in entries


class SpamScorer:
    def __init__(
        self,
        junkScore: float,
        rejectScore: float,
        allowlist: list[str] = (),
        blocklist: list[str] = (),
        metrics: Any = None,
    ) -> None:
        self.junkScore = junkScore
        self.rejectScore = rejectScore
        self._allow = {entry.lower() for entry in allowlist}
        self._block = {entry.lower() for entry in blocklist}
        self._metrics = metrics

    def detached(self) -> SpamScorer:
        """The same rules without metrics: for a store worker process."""
        return SpamScorer(
            self.junkScore, self.rejectScore, sorted(self._allow), sorted(self._block)
        )

    def observe(self, score: float) -> None:
        """Count a score that a detached copy computed."""
        if self._metrics is not None:
            self._metrics.spamScore.observe(score)

    def judge(
        self, envelope: Any, headers: Any, lists: Callable[[], dict]
    ) -> SpamVerdict:
        """
        Score a message from its parsed header block (the metadata pass parsed
        it already); raises L{SpamRejected}. Runs on a file thread. C{lists}
        gives {user id: {sender or domain: kind}}.
        """
        if headers is None:
            headers = _parser.parsebytes(b"")
        sender = senderOf(str(headers.get("From", "")), envelope.mailFrom)
        rules = self._rules(envelope, headers, sender)
        score = round(sum(weight for _, weight in rules), 2)
        self.observe(score)
        verdict = SpamVerdict(score, rules)
        accountLists = _accountLists(
            lists(), [r.userId for r in envelope.recipients], sender
        )
        anyAllowed = any(kind == "allow" for kind in accountLists.values())
        if score >= self.rejectScore and not anyAllowed:
            raise SpamRejected(score, [name for name, _ in rules])
        for recipient in envelope.recipients:
            kind = accountLists.get(recipient.userId)
            junk = kind == "block" or (kind != "allow" and score >= self.junkScore)
            verdict.mailboxes[recipient.userId] = "junk" if junk else envelope.mailbox
        return verdict

    def _rules(
        self, envelope: Any, headers: Any, sender: str
    ) -> list[tuple[str, float]]:
        rules: list[tuple[str, float]] = []
        if envelope.dnsblScore:
            rules.append(("DNSBL_LISTED", envelope.dnsblScore))
        if getattr(envelope, "auth", None) is not None:
            rules.extend(envelope.auth.scoring())
        if not headers.get("Message-ID"):
            rules.append(("MISSING_MESSAGE_ID", 1.5))
        date = headers.get("Date")
        if not date:
            rules.append(("MISSING_DATE", 1.5))
        elif parsedate_tz(str(date)) is None:
            rules.append(("INVALID_DATE", 1.0))
        if str(headers.get("Content-Type", "")).lower().startswith("text/html"):
            rules.append(("HTML_ONLY", 1.0))
        listed = getaddresses(
            [str(v) for v in headers.get_all("To", [])]
            + [str(v) for v in headers.get_all("Cc", [])]
        )
        if len(listed) > MANY_RECIPIENTS:
            rules.append(("MANY_RECIPIENTS", 2.0))
        if matches(sender, self._block):
            rules.append(("SENDER_BLOCKLISTED", LIST_WEIGHT))
        if matches(sender, self._allow):
            rules.append(("SENDER_ALLOWLISTED", -LIST_WEIGHT))
        return rules


def _accountLists(
    lists: dict[int, dict[str, str]], userIds: list[int], sender: str
) -> dict[int, str]:
    """{user id: 'allow' | 'block'} for accounts that listed this sender."""
    domain = sender.rpartition("@")[2]
    found = {}
    for userId in userIds:
        mine = lists.get(userId)
        if mine:
            kind = mine.get(sender) or mine.get(domain) or mine.get(f"@{domain}")
            if kind:
                found[userId] = kind
    return found


class SenderLists:
    """
    Every account's trained sender lists, in memory: scoring then costs no
    query per message. Reloaded (on the calling thread) when older than
    C{maxAge} or after L{changed}; the API calls that when it trains.
    """

    def __init__(self, load: Callable[[], dict], maxAge: float = 30.0) -> None:
        self._load = load
        self._maxAge = maxAge
        self._lists: dict[int, dict[str, str]] = {}
        self._loadedAt = float("-inf")
        self._lock = threading.Lock()
        # Bumped by changed(): store workers compare it to reload their copy.
        self.generation = 0

    def __call__(self) -> dict[int, dict[str, str]]:
        if time.monotonic() - self._loadedAt > self._maxAge:
            with self._lock:
                if time.monotonic() - self._loadedAt > self._maxAge:
                    self._lists = self._load()
                    self._loadedAt = time.monotonic()
        return self._lists

    def changed(self) -> None:
        self._loadedAt = float("-inf")
        self.generation += 1


# The mobile API trains through this name; it moves to ISenderListStore with
# the rest of mailraven/api/ SQL.
from mailraven.store.senderlists import train  # noqa: E402, F401
