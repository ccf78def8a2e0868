"""Links in chat: extraction that survives light obfuscation, and a host/URL blocklist.

Never resolves or fetches anything: a link's risk comes from the text alone.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

# "example dot com", "example[.]com", "example (dot) com" -> "example.com"
_DOT_WORD = re.compile(r"\s*(?:\[\s*\.\s*\]|\(\s*dot\s*\)|\[\s*dot\s*\]|\s+dot\s+)\s*", re.IGNORECASE)
_LINK = re.compile(
    r"(?:(?:https?|hxxps?)://)?"                      # optional scheme, defanged too
    r"((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}"  # host name
    r"|\d{1,3}(?:\.\d{1,3}){3})"                      # or an IPv4 address
    r"(?::\d{2,5})?"                                  # optional port
    r"(/[^\s<>\"']*)?",                               # optional path
    re.IGNORECASE)


@dataclass(frozen=True)
class Link:
    host: str
    path: str

    @property
    def target(self) -> str:
        return self.host + self.path


def extract_links(text: str) -> list[Link]:
    undotted = _DOT_WORD.sub(".", text)
    links = []
    for match in _LINK.finditer(undotted):
        host = match.group(1).lower().rstrip(".")
        path = (match.group(2) or "").rstrip(".,!?)")
        links.append(Link(host, path))
    return links


@dataclass(frozen=True)
class Blocklist:
    hosts: frozenset[str]
    # Blocked URL targets (host + path, no scheme), for entries that block one page of a shared host.
    targets: frozenset[str]

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> "Blocklist":
        """Reads URLhaus-style CSVs with columns kind (ip, domain, url), host and target."""
        hosts, targets = set(), set()
        for path in paths:
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    if row["kind"] == "url":
                        targets.add(row["target"].lower())
                    else:
                        hosts.add(row["host"].lower())
        return cls(frozenset(hosts), frozenset(targets))

    def blocked(self, link: Link) -> str | None:
        """The entry that blocks this link, or None."""
        host = link.host
        # A blocked domain blocks its subdomains too.
        parts = host.split(".")
        for i in range(len(parts) - 1):
            if ".".join(parts[i:]) in self.hosts:
                return ".".join(parts[i:])
        target = link.target.lower()
        return target if target in self.targets else None
