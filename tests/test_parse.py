"""Parsing raw bytes into ParsedMessage: charsets, HTML-only mail, links and garbage."""

from __future__ import annotations

import email
import re
from datetime import datetime
from pathlib import Path

import mailparser
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mailparser import dates as mailparser_dates

from watcher.html_text import html_links, html_to_text
from watcher.parse import parse_message
from watcher.text import unwrap

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
REALMAIL = ROOT.parent / "shared" / "realmail"
VARIANTS = Path(__file__).with_name("mail") / "classify"
needs_corpus = pytest.mark.skipif(not CORPUS.exists(), reason="corpus not present at ../shared/corpus")
REALMAIL_FILES = sorted(p for p in REALMAIL.rglob("*") if p.is_file() and p.name != "README.md") if REALMAIL.exists() else []
VARIANT_FILES = sorted(VARIANTS.glob("*.eml"))
CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+")


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


def test_html_source_line_breaks_collapse_to_spaces_but_pre_keeps_its_lines() -> None:
    text, _ = html_to_text("<p>Your selling\n   account has\tbeen\r\n deactivated.</p><pre>Case 123\nASIN B0X</pre>")
    assert text == "Your selling account has been deactivated.\n\nCase 123\nASIN B0X"


def test_html_with_unclosed_constructs_keeps_its_text() -> None:
    text, links = html_to_text("<head><p>a &lt; b</p><a href='https://x.test/'>go <!-- never closed >now")
    assert text == "a < b\ngo now"
    assert [(link.href, link.text) for link in links] == [("https://x.test/", "go now")]


def test_hard_wrapped_paragraphs_are_joined_but_lists_headings_and_sign_offs_are_not() -> None:
    text = unwrap(
        "We have removed your selling privileges on Amazon.ca and placed a\n"
        "temporary hold on the funds in your seller account\n"
        "until the review ends.\n"
        "Why did this happen?\n"
        "To appeal, send a plan of action that explains the following:\n"
        "- the root cause of the late shipments, as you found it in your\n"
        "records\n"
        "1. the steps you took\n"
        "ASIN: B0DK3MZ8VA\n"
        "Case ID: 123\n"
        "Regards,\n"
        "Seller Performance Team"
    )
    assert text.split("\n") == [
        "We have removed your selling privileges on Amazon.ca and placed a temporary hold on the funds in your "
        "seller account until the review ends.",
        "Why did this happen?",
        "To appeal, send a plan of action that explains the following:",
        "- the root cause of the late shipments, as you found it in your records",
        "1. the steps you took",
        "ASIN: B0DK3MZ8VA",
        "Case ID: 123",
        "Regards,",
        "Seller Performance Team",
    ]


def test_hard_wrapped_cjk_lines_are_joined_without_a_space() -> None:
    text = unwrap("商品が本物であることを確認するため、過去365日以内に発行された仕入れ先の請求書と、\n改善計画書をご提出ください。")
    assert text == "商品が本物であることを確認するため、過去365日以内に発行された仕入れ先の請求書と、改善計画書をご提出ください。"
    listed = unwrap("ポータブルガスバーナー 250g カートリッジ付き、燃料ボトルとセットの商品\nB0CW9P1L7K キャンプ用 燃料ボトル 1L")
    assert listed == "ポータブルガスバーナー 250g カートリッジ付き、燃料ボトルとセットの商品 B0CW9P1L7K キャンプ用 燃料ボトル 1L"



def test_a_quoted_paragraph_is_joined_at_its_own_depth_only() -> None:
    text = unwrap(
        "Forwarding this, see below for what they want from us this week.\n"
        "> We took this action because the information you provided could not be\n"
        "> verified.\n"
        ">\n"
        "> > an older message quoted inside the notice, long enough to be wrapped\n"
        "> that the notice itself continues here at the first depth again\n"
        "and an unquoted line that follows the quoted block directly below it"
    )
    assert text.split("\n") == [
        "Forwarding this, see below for what they want from us this week.",
        "> We took this action because the information you provided could not be verified.",
        ">",
        "> > an older message quoted inside the notice, long enough to be wrapped",
        "> that the notice itself continues here at the first depth again",
        "and an unquoted line that follows the quoted block directly below it",
    ]


def test_a_message_attached_whole_shows_its_sender_and_subject_above_its_text() -> None:
    inner = (
        "From: Amazon.com.au <seller-verification@amazon.com.au>\r\nSubject: Verify your card\r\n"
        "Date: Thu, 24 Sep 2026 07:41:10 +1000\r\nContent-Type: text/plain\r\n\r\nPlease verify your card.\r\n"
    )
    content = (
        "From: Tom <tom@agency.example>\r\nTo: ops@shop.example\r\nSubject: Fwd: Verify your card\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nSee the attached notice.\r\n"
        '--b\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename="notice.eml"\r\n\r\n'
        f"{inner}--b--\r\n"
    ).encode()
    text = parse_message(content).text
    assert text.index("See the attached notice.") < text.index("From: Amazon.com.au <seller-verification@amazon.com.au>")
    assert "Subject: Verify your card" in text
    assert text.index("Subject: Verify your card") < text.index("Please verify your card.")

def test_punctuation_after_a_bare_url_is_not_part_of_the_link() -> None:
    message = parse_message(
        b"From: PayPal <service@paypal.it>\r\nSubject: Avviso\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Digita tu stesso www.paypal.it, poi accedi. Oppure https://www.paypal.com/signin.\r\n"
    )
    assert [link.href for link in message.links] == ["www.paypal.it", "https://www.paypal.com/signin"]

ADDRESS_SAMPLES = (sorted(CORPUS.glob("*.eml")) if CORPUS.exists() else []) + REALMAIL_FILES


@pytest.mark.skipif(not ADDRESS_SAMPLES, reason="neither ../shared/corpus nor ../shared/realmail is present")
@pytest.mark.parametrize("path", ADDRESS_SAMPLES, ids=[p.name for p in ADDRESS_SAMPLES])
def test_sender_and_recipients_are_those_mail_parser_finds(path: Path) -> None:
    content = path.read_bytes()
    ours = parse_message(content)
    theirs = mailparser.parse_from_bytes(content)
    senders = [("" if name == address else name, address.lower()) for name, address in theirs.from_ if address]
    assert ([(ours.from_name, ours.from_address)] if ours.from_address else []) == senders[:1]
    assert list(ours.to) == [address.lower() for _, address in theirs.to if address]


HTML_SAMPLES = [
    "<html><head><title>T</title><style>a{}</style></head><body><a href='https://a.example/'>A</a>"
    "<!-- <a href='https://hidden.example/'>no</a> --><script>x='<a href=\"https://s.example/\">'</script>"
    "<p><a HREF=\"https://b.example/?x=1&amp;y=2\">go <b>now</b></a></p><a name=top>anchor</a></body></html>",
    "<a href='https://x.test/'>go <!-- never closed >now",
    "<head><a href=https://unclosed-head.example/>in a head that never ends</a>",
    "<a href='https://one.example/'>one<a href='https://two.example/'>two</a>",
]


@pytest.mark.parametrize("document", HTML_SAMPLES)
def test_links_alone_are_the_links_the_full_conversion_finds(document: str) -> None:
    assert [link.href for link in html_links(document)] == [link.href for link in html_to_text(document)[1]]


@needs_corpus
def test_mail_with_a_plain_part_keeps_the_links_of_its_html_part() -> None:
    for path in sorted(CORPUS.glob("*.eml")):
        message = parse_message(path.read_bytes())
        raw = email.message_from_bytes(path.read_bytes())
        html_parts = [p for p in raw.walk() if p.get_content_type() == "text/html" and not p.get_filename()]
        plain_parts = [p for p in raw.walk() if p.get_content_type() == "text/plain" and not p.get_filename()]
        if not (html_parts and plain_parts):
            continue
        document = "\n".join(p.get_payload(decode=True).decode(p.get_content_charset() or "utf-8") for p in html_parts)
        expected = [link.href for link in html_to_text(document)[1]]
        assert [link.href for link in message.links][: len(expected)] == expected, path.name


@given(st.datetimes(min_value=datetime(1890, 1, 1), max_value=datetime(2100, 12, 31)), st.sampled_from(
    ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", ""]), st.sampled_from(["+0000", "-0800", "+0530", "+2460"]))
def test_date_header_defect_agrees_with_mail_parser(moment: datetime, weekday: str, zone: str) -> None:
    value = f"{weekday + ', ' if weekday else ''}{moment.day} {moment:%b %Y %H:%M:%S} {zone}"
    content = f"From: a@b.example\r\nDate: {value}\r\nSubject: s\r\n\r\nbody\r\n".encode()
    expected = bool(mailparser_dates.parse_mail_date(value).reasons)
    assert ("DateHeaderDefect" in parse_message(content).defects) == expected


@pytest.mark.parametrize(
    "text",
    ["See HTTPS://Sellercentral.Amazon.com/x and www.example.test/y.", "xhttp://no.example/ but (https://yes.example/)",
     "İstanbul https://after-a-dotted-capital.example/"],
)
def test_bare_urls_are_found_whatever_their_case(text: str) -> None:
    content = f"From: a@b.example\r\nSubject: s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n".encode()
    found = [link.href for link in parse_message(content).links]
    expected = re.findall(r"""\b(?:https?://|www\.)[^\s<>"')\]]+""", text, re.IGNORECASE)
    assert found == [url.rstrip(".,;:!?") for url in expected]


@pytest.mark.parametrize("path", REALMAIL_FILES + VARIANT_FILES, ids=[p.name for p in REALMAIL_FILES + VARIANT_FILES])
def test_headers_are_the_ones_the_standard_library_reads(path: Path) -> None:
    content = path.read_bytes()
    message = parse_message(content)
    if any(defect.startswith(("email:", "parse:", "headers:")) for defect in message.defects):
        return  # read by the fallback, which has its own tests
    standard = email.message_from_bytes(content).items()
    assert [name for name, _ in message.headers] == [name for name, _ in standard]
    for (_, ours), (name, theirs) in zip(message.headers, standard, strict=True):
        if "=?" not in str(theirs):  # encoded words are decoded: tested above
            assert ours == " ".join(CONTROLS.sub("", str(theirs)).split())[:8000], name
