"""Links in chat: extraction that survives obfuscation, a host/URL blocklist, and a URL model.

Never resolves or fetches anything: a link's risk comes from the text alone.
"""
from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable

from fraudurl.lexical import extract as url_features
from fraudurl.model import Model

from udfs.normalize import latin_lookalikes, strip_marks_and_invisibles

# "example dot com", "example[.]com", "example (dot) com", "example . com", "example .com" -> "example.com".
# A dot followed but not preceded by a space ends a sentence ("ok. so"), so that one stays.
_DOT_WORD = re.compile(r"\s*(?:\[\s*(?:\.|dot)\s*\]|\(\s*(?:\.|dot)\s*\)|\s+dot\s+|\s+\.\s*)\s*", re.IGNORECASE)
# "discord dot gg slash abc" -> "discord.gg/abc"
_SLASH_WORD = re.compile(r"\s+slash\s+", re.IGNORECASE)
# Runs of white space become one space first: _DOT_WORD's optional spaces around its spaced alternatives
# tried every split of a long run (2,000 spaces: 21 s); links hold no white space, so nothing is lost.
_WHITESPACE_RUN = re.compile(r"\s+")
_LINK = re.compile(
    r"(?<![@\w.-])"                                   # not the domain of an e-mail address, not mid-word
    r"(?:(https?|hxxps?)://)?"                        # optional scheme, defanged too
    r"((?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,24}"  # host name, any script (look-alikes fold later)
    r"|\d{1,3}(?:\.\d{1,3}){3})"                      # or an IPv4 address
    r"(?::\d{2,5})?"                                  # optional port
    r"(/[^\s<>\"']*)?",                               # optional path
    re.IGNORECASE)


@dataclass(frozen=True)
class Link:
    host: str
    path: str
    scheme: str = ""  # "http" or "https" when written (defanged "hxxp" read as "http")
    # The host was written with look-alike letters from another script ("раураl.com"): a disguise.
    lookalike: bool = False

    @property
    def target(self) -> str:
        return self.host + self.path

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.target}" if self.scheme else self.target


def extract_links(text: str) -> list[Link]:
    """Links written in the text, however spelled; hosts in lower case with look-alike letters folded,
    paths as written."""
    # Compatibility-folded but not case-folded: a URL's path is case-sensitive, and the URL model reads case.
    plain = _WHITESPACE_RUN.sub(" ", strip_marks_and_invisibles(unicodedata.normalize("NFKD", text)))
    undotted = _SLASH_WORD.sub("/", _DOT_WORD.sub(".", plain))
    links = []
    for match in _LINK.finditer(undotted):
        written_host = match.group(2).rstrip(".").casefold()
        host = _fold_host(written_host)
        scheme = (match.group(1) or "").lower().replace("hxxp", "http")
        if not scheme and not _has_real_tld(host):  # "ok.they said": a missing space, not a link
            continue
        path = (match.group(3) or "").rstrip(".,!?)")
        links.append(Link(host, path, scheme, lookalike=host != written_host and host.isascii()))
    return list(dict.fromkeys(links))


def _fold_host(host: str) -> str:
    if host.isascii():
        return host
    lookalikes = latin_lookalikes()
    return "".join(lookalikes.get(char, char) for char in host)


@lru_cache(maxsize=1)
def top_level_domains() -> frozenset[str]:
    """Every top-level label in the Public Suffix List that fraudurl ships (MPL-2.0), in ASCII and Unicode."""
    rules = (resources.files("fraudurl") / "data" / "public_suffix_list.dat").read_text(encoding="utf-8")
    return frozenset(line.split(".")[-1].lstrip("!*") for line in rules.splitlines()
                     if line.strip() and not line.startswith("//"))


def _has_real_tld(host: str) -> bool:
    tld = host.rsplit(".", 1)[-1]
    return tld.isdigit() or tld in top_level_domains()


def listed_site(link: Link, sites: Iterable[str]) -> str | None:
    """The first of ``sites`` the link is on: a domain ("t.me") covers its subdomains, a domain with a
    path ("discord.com/invite") the pages under that path."""
    for site in sites:
        domain, _, path = site.lower().partition("/")
        on_domain = link.host == domain or link.host.endswith("." + domain)
        if on_domain and (not path or link.path.lstrip("/").startswith(path)):
            return site
    return None


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


class UrlModel:
    """fraudurl's offline model (MIT; gradient-boosted trees on 83 features of the URL text, Platt-
    calibrated): the probability that a URL is phishing, from the URL alone. Only its URL-text
    feature extractor and model are used; its optional DNS/RDAP look-ups (``fraudurl.enrich``) are
    never imported, so scoring cannot touch the network. Load it once, in an operator's ``open()``.
    """

    MODEL_FILE = "model_safe.json"

    def __init__(self):
        self._model = Model(str(resources.files("fraudurl") / "data" / self.MODEL_FILE))
        # 400 trees in plain Python take milliseconds, and chat repeats its links: each URL once.
        self._probability_of_url = lru_cache(maxsize=8192)(self._score_url)

    def probability(self, link: Link) -> float | None:
        """Calibrated phishing probability, or None when fraudurl cannot parse the URL."""
        return self._probability_of_url(link.url)

    def _score_url(self, url: str) -> float | None:
        features = url_features(url)
        if features.get("parse_error"):
            return None
        _, probability, _, _ = self._model.predict(features, want_reasons=False)
        return probability
