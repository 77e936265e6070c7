"""Parsing raw bytes into ParsedMessage: charsets, HTML-only mail, links and garbage."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.parse import html_to_text, parse_message

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
REALMAIL = ROOT.parent / "shared" / "realmail"
VARIANTS = Path(__file__).with_name("mail") / "classify"
needs_corpus = pytest.mark.skipif(not CORPUS.exists(), reason="corpus not present at ../shared/corpus")
REALMAIL_FILES = sorted(p for p in REALMAIL.rglob("*") if p.is_file() and p.name != "README.md") if REALMAIL.exists() else []


@needs_corpus
def test_iso_2022_jp_seven_bit_body_is_decoded() -> None:
    message = parse_message((CORPUS / "amazon-account_deactivated-ja-01.eml").read_bytes())
    assert "\x1b" not in message.text
    assert "アカウントは閉鎖されています" in message.text


@needs_corpus
def test_html_only_mail_becomes_readable_text_with_links() -> None:
    message = parse_message((CORPUS / "amazon-account_deactivated-en-03.eml").read_bytes())
    assert "Why did this happen?" in message.text
    assert "<" not in message.text
    assert any(link.text == "Account Health" and "sellercentral.amazon.com" in link.href for link in message.links)


@needs_corpus
def test_link_whose_text_shows_another_host_keeps_both() -> None:
    message = parse_message((CORPUS / "amazon-phish-en-03.eml").read_bytes())
    link = message.links[0]
    assert link.text == "https://sellercentral.amazon.com/account/unlock"
    assert link.href.startswith("https://sellercentral.amazon.com.account-unlock.test/")


@needs_corpus
def test_encoded_display_name_and_subject_are_decoded() -> None:
    message = parse_message((CORPUS / "amazon-account_deactivated-ja-02.eml").read_bytes())
    assert message.from_name == "Amazonアカウントスペシャリスト"
    assert message.from_address == "seller-notification@amazon.co.jp"
    assert "パフォーマンス通知" in message.subject


@needs_corpus
def test_headers_keep_their_order_so_the_topmost_result_comes_first() -> None:
    message = parse_message((CORPUS / "amazon-phish-en-04.eml").read_bytes())
    results = message.header("Authentication-Results")
    assert results[0].startswith("mx.inbound.example") and results[1].startswith("mx.amazon.co.uk")


def test_windows_1252_html_entities_become_characters() -> None:
    message = parse_message((VARIANTS / "amazon-account_deactivated-en-html-cp1252.eml").read_bytes())
    assert "We’ve suspended your seller account on Amazon.ca." in message.text
    assert "Seller Performance – Amazon.ca" in message.text
    assert message.date is not None and message.date.utcoffset() is not None


def test_html_tables_and_hidden_parts_convert_to_lines() -> None:
    text, links = html_to_text(
        "<html><head><title>T</title><style>p{}</style></head><body><table><tr><td>A&amp;B</td>"
        "<td><a href='https://x.example/?a=1&amp;b=2'>go <b>now</b></a></td></tr></table><p>next</p></body></html>"
    )
    assert text == "A&B go now\n\nnext"
    assert [(link.href, link.text) for link in links] == [("https://x.example/?a=1&b=2", "go now")]


def test_garbage_never_raises_and_yields_a_message() -> None:
    message = parse_message(b"\x00\x01\x02garbage without headers\xff")
    assert message.subject == ""
    assert message.from_address == ""


@pytest.mark.skipif(not REALMAIL_FILES, reason="real-world mail not present at ../shared/realmail")
@pytest.mark.parametrize("path", REALMAIL_FILES, ids=[p.name for p in REALMAIL_FILES])
def test_real_world_mail_parses_without_raising(path: Path) -> None:
    message = parse_message(path.read_bytes())
    assert len(message.text) <= 200_000
