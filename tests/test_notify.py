"""Notification text: what it says, that email text cannot inject markup, and the exact Slack/Telegram requests."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import responses

from watcher.model import Classification, Event, Guidance
from watcher.notify import escape, markup_for, render, send
from watcher.config import ChannelConfig
from watcher.secrets import Secret

GUIDANCE = Guidance("Appeal a related-account deactivation", ("Open Seller Central → Performance → Account Health.",
                                                               "Write the appeal."), "amazon/account_deactivated/related_account")
HOSTILE = "Hi @channel <!here> *now* see https://evil.example/login [click](https://evil.example) <b>x</b>"


def event(**changes: object) -> Event:
    values: dict[str, object] = dict(relevant=True, platform="amazon", kind="account_deactivated",
                                     reason="related_account", severity="critical", authenticity="verified",
                                     language="en", reason_text="Your account is related to another account.",
                                     deadline=date(2026, 12, 8), marketplace="amazon.com", ids=("B0C7KX2M4Q",))
    values.update(changes)
    return Event(id=7, account="us-store", store="Lotus Home", folder="INBOX", uid=3, uidvalidity=1,
                 message_id="<m@amazon.com>", subject="Your Amazon.com Selling Account",
                 sender="Amazon <seller-notification@amazon.com>", received_at=datetime(2026, 11, 28, 9, 30, tzinfo=UTC),
                 detected_at=datetime(2026, 11, 28, 9, 31, tzinfo=UTC), classification=Classification(**values),  # type: ignore[arg-type]
                 status="open")


def channel(url: str) -> ChannelConfig:
    return ChannelConfig("c", Secret(url), (), (), (), "info")


def test_the_notification_says_which_store_what_why_deadline_verdict_and_next_steps() -> None:
    rendered = render(event(), GUIDANCE, today=date(2026, 11, 28))
    assert rendered.title == "[CRITICAL] Amazon: account deactivated — Lotus Home"
    body = rendered.body
    assert "**Inbox:** us\\-store / INBOX" in body or "**Inbox:** us-store / INBOX" in body
    assert "**Received:** 2026-11-28 09:30 UTC" in body
    assert "**What happened:** Amazon account deactivated (amazon.com) — related to another account" in body
    assert "**Why:** Your account is related to another account." in body
    assert "**Deadline:** 2026-12-08 (10 days left)" in body
    assert "**Genuine?:** ✅ Genuine" in body
    assert "1. Open Seller Central → Performance → Account Health.\n2. Write the appeal." in body
    assert body.endswith("Event #7 · `watcher events show 7`")


def test_a_phishing_notice_is_titled_as_phishing() -> None:
    rendered = render(event(authenticity="suspected_phishing"), GUIDANCE, today=date(2026, 11, 28))
    assert rendered.title == "[PHISHING] Amazon: account deactivated? — Lotus Home"
    assert "Suspected PHISHING" in rendered.body


def test_notifications_follow_the_guidance_language() -> None:
    rendered = render(event(deadline=date(2026, 11, 20)), GUIDANCE, language="zh", today=date(2026, 11, 28))
    assert "账户已停用" in rendered.title
    assert "**截止日期:** 2026-11-20 (已过期 8 天)" in rendered.body


def test_email_text_cannot_inject_markup_mentions_or_links() -> None:
    for markup in ("html", "slack", "markdown"):
        text = escape(HOSTILE, markup)
        assert "@channel" not in text
        assert "https://" not in text and "evil.example" not in text
        assert "*now*" not in text
        assert "[click](" not in text
    for markup in ("html", "slack"):
        assert "<!here>" not in escape(HOSTILE, markup) and "<b>" not in escape(HOSTILE, markup)


def test_channel_markup_is_chosen_from_the_url() -> None:
    assert markup_for("slack://T1ABCDEFG/B2ABCDEFG/C3abcdefghijklmnopqrstuv/#ops") == "slack"
    assert markup_for("tgram://123456789:abcdefghijklmnopqrstuvwxyzABCDEFGHI/-1001234567") == "markdown"
    assert markup_for("discord://1234567890/abcdefghijkl") == "markdown"
    assert markup_for("mailto://127.0.0.1:25?to=a@b.example&from=x@y.example&mode=insecure") == "html"
    assert markup_for("json://127.0.0.1:9/x") == "html"


@responses.activate
def test_slack_gets_exactly_one_webhook_post_with_escaped_text() -> None:
    url = "https://hooks.slack.com/services/T1ABCDEFG/B2ABCDEFG/C3abcdefghijklmnopqrstuv"
    responses.add(responses.POST, url, body="ok")
    rendered = render(event(reason_text=HOSTILE), GUIDANCE, markup="slack", today=date(2026, 11, 28))
    outcome, _ = send(channel("slack://T1ABCDEFG/B2ABCDEFG/C3abcdefghijklmnopqrstuv/#ops"), rendered.title,
                      rendered.body, rendered.notify_type)
    assert outcome.outcome == "success"
    assert len(responses.calls) == 1
    request = responses.calls[0].request
    assert request.url == url
    payload = json.loads(request.body)
    assert payload["channel"] == "#ops"
    attachment = payload["attachments"][0]
    assert attachment["title"] == "[CRITICAL] Amazon: account deactivated — Lotus Home"
    assert "\u2039!here\u203a" in attachment["text"] and "<!here>" not in attachment["text"]
    assert "@\u2060channel" in attachment["text"]
    assert "hxxps://evil" in attachment["text"] and "evil.example" not in attachment["text"]
    assert "1. Open Seller Central → Performance → Account Health." in attachment["text"]


@responses.activate
def test_telegram_gets_exactly_one_send_message_call() -> None:
    url = "https://api.telegram.org/bot123456789:abcdefghijklmnopqrstuvwxyzABCDEFGHI/sendMessage"
    responses.add(responses.POST, url, json={"ok": True})
    rendered = render(event(), GUIDANCE, markup="markdown", today=date(2026, 11, 28))
    outcome, _ = send(channel("tgram://123456789:abcdefghijklmnopqrstuvwxyzABCDEFGHI/-1001234567"),
                      rendered.title, rendered.body, rendered.notify_type)
    assert outcome.outcome == "success"
    assert len(responses.calls) == 1
    payload = json.loads(responses.calls[0].request.body)
    assert payload["chat_id"] == -1001234567
    assert payload["parse_mode"] == "MARKDOWN"
    assert payload["text"].startswith("*[CRITICAL] Amazon: account deactivated — Lotus Home*\n")
    assert "2026-12-08 (10 days left)" in payload["text"]


@responses.activate
def test_a_failed_send_keeps_apprise_status_and_never_the_secret_url() -> None:
    url = "https://hooks.slack.com/services/T1ABCDEFG/B2ABCDEFG/C3abcdefghijklmnopqrstuv"
    responses.add(responses.POST, url, status=500, body="server_error")
    outcome, _ = send(channel("slack://T1ABCDEFG/B2ABCDEFG/C3abcdefghijklmnopqrstuv/#ops"), "t", "b")
    assert outcome.outcome == "failure" and not outcome.permanent
    assert "C3abcdefghijklmnopqrstuv" not in outcome.detail and "B2ABCDEFG" not in outcome.detail


def test_an_unloadable_url_is_a_permanent_error() -> None:
    outcome, _ = send(channel("nosuchscheme://x/y"), "t", "b")
    assert (outcome.outcome, outcome.permanent) == ("error", True)


@responses.activate
def test_discord_gets_one_webhook_post_with_inert_mentions() -> None:
    url = "https://discord.com/api/webhooks/1234567890/abcdefghijkl"
    responses.add(responses.POST, url, status=204)
    rendered = render(event(reason_text="@everyone look *now* https://evil.example"), GUIDANCE, markup="markdown",
                      today=date(2026, 11, 28))
    outcome, _ = send(channel("discord://1234567890/abcdefghijkl"), rendered.title, rendered.body, rendered.notify_type)
    assert outcome.outcome == "success"
    assert len(responses.calls) == 1 and responses.calls[0].request.url == url
    content = json.loads(responses.calls[0].request.body)["content"]
    assert content.startswith("[CRITICAL] Amazon: account deactivated — Lotus Home\r\n")
    assert "@\u2060everyone" in content and "\\*now\\*" in content and "hxxps://evil\\[.\\]example" in content


def test_html_email_shows_hostile_text_as_text(smtp_sink) -> None:  # type: ignore[no-untyped-def]
    rendered = render(event(reason_text=HOSTILE), GUIDANCE, markup=markup_for(smtp_sink.url()), today=date(2026, 11, 28))
    outcome, _ = send(channel(smtp_sink.url()), rendered.title, rendered.body, rendered.notify_type)
    assert outcome.outcome == "success", outcome.detail
    (mail,) = smtp_sink.wait_for(1)
    html = next(part for part in mail.walk() if part.get_content_type() == "text/html").get_content()
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "evil.example" not in html and "href=\"https://evil" not in html
    assert "<strong>Why:</strong>" in html or "<b>Why:</b>" in html  # our own Markdown did render
