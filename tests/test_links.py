"""udfs.links: extraction that survives obfuscation, listed sites, and fraudurl's offline URL model."""
import socket

import pytest

from udfs.links import Link, UrlModel, extract_links, listed_site


@pytest.mark.parametrize("text, urls", [
    ("example dot com", ["example.com"]),
    ("example DOT com slash login", ["example.com/login"]),
    ("example . com", ["example.com"]),
    ("example .com", ["example.com"]),
    ("example(dot)com", ["example.com"]),
    ("example[dot]com/x", ["example.com/x"]),
    ("join discord dot gg slash abc123", ["discord.gg/abc123"]),
    ("ｅｘａｍｐｌｅ．ｃｏｍ", ["example.com"]),  # fullwidth
    ("exa\u200bmple.com", ["example.com"]),  # a zero-width space inside the host
    ("HTTPS://Example.COM/Path", ["https://example.com/Path"]),  # the path keeps its case
    ("hxxps://evil.example.com/a", ["https://evil.example.com/a"]),
    ("t.me/kidsroom and wa.me/15551234567", ["t.me/kidsroom", "wa.me/15551234567"]),
])
def test_extracts_obfuscated_links(text, urls):
    assert [link.url for link in extract_links(text)] == urls


@pytest.mark.parametrize("text", [
    "ok. so what", "lol", "gg wp", "i was there.they left", "mail me at kid@example.com", "3.5 hp left",
    "version 1.2.3", "wait...what",
])
def test_ordinary_text_and_email_addresses_are_not_links(text):
    assert extract_links(text) == []


def test_lookalike_letters_in_a_host_fold_and_are_flagged():
    (link,) = extract_links("login at раураl.com/verify")  # Cyrillic р, а, у
    assert (link.host, link.path, link.lookalike) == ("paypal.com", "/verify", True)
    (plain,) = extract_links("login at paypal.com/verify")
    assert not plain.lookalike


@pytest.mark.parametrize("link, site", [
    (Link("discord.gg", "/abc"), "discord.gg"),
    (Link("www.discord.com", "/invite/abc"), "discord.com/invite"),
    (Link("discord.com", "/channels/1"), None),  # discord.com, but not an invite
    (Link("t.me", "/kidsroom"), "t.me"),
    (Link("notdiscord.gg", "/abc"), None),
])
def test_listed_site(link, site):
    assert listed_site(link, ["discord.gg", "discord.com/invite", "t.me"]) == site


@pytest.fixture(scope="module")
def url_model():
    return UrlModel()


def test_url_model_scores_phishing_above_ordinary_sites(url_model):
    phishing = url_model.probability(Link("paypal.com.secure-login.test", "/webscr/login.php", "http"))
    ordinary = url_model.probability(Link("wikipedia.org", ""))
    assert 0 <= ordinary < 0.5 < phishing <= 1


def test_url_model_never_touches_the_network(url_model, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network use")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    fresh = UrlModel()  # loading too
    assert fresh.probability(Link("secure-update-account.example-login.xyz", "/signin", "http")) is not None


def test_a_long_run_of_white_space_is_read_as_one_space():
    # 2,000 and more spaces once took the "dot" pattern cubic time (issue 13); the result is what one space gives.
    assert extract_links("evil" + " " * 3000 + "dot com") == extract_links("evil dot com")
    assert extract_links("a" + " " * 5000 + "b" + "\n" * 5000 + "c") == []
