"""The header screen: no notice is ever dropped, ordinary mail mostly is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from watcher.rules import load_rules
from watcher.screen import Screen, Verdict, might_be_notice

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
REALMAIL = ROOT.parent / "shared" / "realmail"
VARIANTS = Path(__file__).with_name("mail") / "classify"
LABELS = json.loads((CORPUS / "labels.json").read_text(encoding="utf-8")) if CORPUS.exists() else []
RELEVANT = [label["file"] for label in LABELS if label["relevant"]]
REALMAIL_FILES = sorted(p for p in REALMAIL.rglob("*") if p.is_file() and p.name != "README.md") if REALMAIL.exists() else []


def header_block(content: bytes) -> bytes:
    ends = [i for i in (content.find(b"\r\n\r\n"), content.find(b"\n\n")) if i >= 0]
    return content[: min(ends)] if ends else content


@pytest.mark.skipif(not RELEVANT, reason="corpus not present at ../shared/corpus")
@pytest.mark.parametrize("name", RELEVANT)
def test_every_relevant_corpus_header_block_passes(name: str) -> None:
    assert might_be_notice(header_block((CORPUS / name).read_bytes()))


@pytest.mark.parametrize(
    "headers",
    [
        b"From: =?utf-8?b?5Lqa6ams6YCK?= <notice@mailer.example>\r\nSubject: hello",
        b"From: shop@example.test\r\nSubject: =?utf-8?b?44Ki44Oe44K+44Oz44GL44KJ44Gu44GK55+l44KJ44Gb?=",
        b"From: Seller Support <support@amaz0n-help.example>\r\nSubject: notice",
        b"From: Support <help@amzon-services.example>\r\nSubject: notice",
        b"From: Service <service@paypa1-secure.example>\r\nSubject: notice",
        b"From: Team <team@shopify-merchant-review.example>\r\nSubject: notice",
        b"From: colleague@own.example\r\nSubject: WG: Kontoinformation",
        b"From: colleague@own.example\r\nSubject: =?utf-8?b?6L2s5Y+R77ya6YeN6KaB6YCa55+l?=",
        b"From: colleague@own.example\r\nSubject: Tr: important",
        b"From: Amazon.co.jp <x@mailer.example>\r\nSubject: notice",
        b"From: someone@example.test\r\nReply-To: help@sellercentral.amazon.de\r\nSubject: hi",
    ],
)
def test_platform_names_look_alikes_and_forwards_pass(headers: bytes) -> None:
    assert might_be_notice(headers)


def test_ordinary_mail_is_screened_out() -> None:
    assert not might_be_notice(b"From: Maya <maya@mailbox.example>\r\nTo: sam@home.example\r\nSubject: Re: dinner Saturday?")


def test_unreadable_header_block_is_fetched_rather_than_dropped() -> None:
    assert might_be_notice(b"\xff\xfe\x00garbage") in (True, False)


@pytest.mark.skipif(not REALMAIL_FILES, reason="real-world mail not present at ../shared/realmail")
def test_most_real_world_mail_is_screened_out() -> None:
    passed = [p.name for p in REALMAIL_FILES if might_be_notice(header_block(p.read_bytes()))]
    assert len(passed) <= len(REALMAIL_FILES) // 10, passed


def test_a_forward_that_names_no_platform_in_its_headers_is_decided_by_its_text() -> None:
    screen = Screen(load_rules())
    header = b"From: Wei <wei@brightway.example>\r\nTo: ops@brightway.example\r\nSubject: Fwd: please handle today\r\n\r\n"
    assert screen.verdict(header) is Verdict.FORWARD
    assert not screen.texts_name_a_platform(["Photos from the trip, see you Monday."])
    assert screen.texts_name_a_platform(["see below", "From: Amazon Services <seller-notification@amazon.com>"])
    assert screen.texts_name_a_platform(["<p>&#20122;&#39532;&#36874;卖家账户已停用</p>"])


def test_platform_headers_are_fetched_and_plain_mail_is_skipped() -> None:
    screen = Screen(load_rules())
    assert screen.verdict(b"From: Amazon <x@amazon.co.jp>\r\nSubject: hi\r\n\r\n") is Verdict.FETCH
    assert screen.verdict(b"From: Support <x@amaz0n-security.example>\r\nSubject: hi\r\n\r\n") is Verdict.FETCH
    assert screen.verdict(b"From: Anna <anna@example.org>\r\nSubject: trip photos\r\n\r\n") is Verdict.SKIP
