"""Classification of every labelled corpus message, the real-world mail and our own variants."""

from __future__ import annotations

import json
import logging
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from watcher import authenticity
from watcher.classify import classify
from watcher.errors import RulesError
from watcher.model import Classification
from watcher.parse import parse_message
from watcher.rules import RuleSet, load_rules

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
REALMAIL = ROOT.parent / "shared" / "realmail"
VARIANTS = Path(__file__).with_name("mail") / "classify"
LABELLED_FIELDS = ("relevant", "platform", "kind", "reason", "authenticity", "language", "deadline", "marketplace")


def _labels(folder: Path, name: str) -> list[dict[str, Any]]:
    path = folder / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []


CORPUS_LABELS = _labels(CORPUS, "labels.json")
VARIANT_LABELS = _labels(VARIANTS, "expected.json")
REALMAIL_FILES = sorted(p for p in REALMAIL.rglob("*") if p.is_file() and p.name != "README.md") if REALMAIL.exists() else []


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules()


def _classified(path: Path, rules: RuleSet) -> Classification:
    return classify(parse_message(path.read_bytes()), rules)


def _assert_matches_label(result: Classification, label: dict[str, Any]) -> None:
    got = {
        "relevant": result.relevant,
        "platform": result.platform,
        "kind": result.kind,
        "reason": result.reason,
        "authenticity": result.authenticity,
        "language": result.language,
        "deadline": result.deadline.isoformat() if result.deadline else None,
        "marketplace": result.marketplace,
    }
    wrong = {field: (label[field], got[field]) for field in LABELLED_FIELDS if got[field] != label[field]}
    assert not wrong, f"(expected, got) per field: {wrong}"
    missing = set(label["ids"]) - set(result.ids)
    assert not missing, f"ids not found: {sorted(missing)} (found {result.ids})"
    if result.relevant:
        assert result.severity is not None
        assert {e.field for e in result.evidence} >= {"platform", "kind", "authenticity"}


@pytest.mark.skipif(not CORPUS_LABELS, reason="corpus not present at ../shared/corpus")
@pytest.mark.parametrize("label", CORPUS_LABELS, ids=[label["file"] for label in CORPUS_LABELS])
def test_corpus_message_gets_every_labelled_field(label: dict[str, Any], rules: RuleSet) -> None:
    _assert_matches_label(_classified(CORPUS / label["file"], rules), label)


@pytest.mark.parametrize("label", VARIANT_LABELS, ids=[label["file"] for label in VARIANT_LABELS])
def test_variant_message_gets_every_expected_field(label: dict[str, Any], rules: RuleSet) -> None:
    _assert_matches_label(_classified(VARIANTS / label["file"], rules), label)


def test_every_variant_file_has_expectations() -> None:
    files = {p.name for p in VARIANTS.glob("*.eml")}
    assert files == {label["file"] for label in VARIANT_LABELS}


@pytest.mark.skipif(not REALMAIL_FILES, reason="real-world mail not present at ../shared/realmail")
@pytest.mark.parametrize("path", REALMAIL_FILES, ids=[p.name for p in REALMAIL_FILES])
def test_real_world_mail_is_never_a_notice(path: Path, rules: RuleSet, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="watcher.classify"):
        result = _classified(path, rules)
    assert result.relevant is False
    assert not caplog.records, "classification raised internally"


def test_phishing_is_never_verified_even_when_its_own_domain_passes_dmarc(rules: RuleSet) -> None:
    result = _classified(VARIANTS / "amazon-phish-en-lookalike.eml", rules)
    assert result.authenticity == "suspected_phishing"
    assert any(e.field == "authenticity" and "link" in e.rule for e in result.evidence)


def test_appeal_channel_is_given_only_for_verified_mail(rules: RuleSet) -> None:
    verified = _classified(VARIANTS / "amazon-account_deactivated-en-html-cp1252.eml", rules)
    phishing = _classified(VARIANTS / "amazon-phish-en-lookalike.eml", rules)
    assert ("appeal_channel", "https://sellercentral.amazon.ca/performance/dashboard") in verified.facts
    assert not any(name == "appeal_channel" for name, _ in phishing.facts)


def test_a_configured_authserv_id_replaces_the_topmost_header(rules: RuleSet) -> None:
    message = parse_message((VARIANTS / "ebay-account_deactivated-de-base64.eml").read_bytes())
    assert classify(message, rules).authenticity == "verified"
    untrusted = classify(message, rules, trusted_authserv_ids=("mx.other.example",))
    assert untrusted.authenticity == "unverified"


def test_held_funds_and_hold_days_are_recorded_as_facts(rules: RuleSet) -> None:
    result = _classified(VARIANTS / "paypal-account_deactivated-en-forward.eml", rules)
    assert ("funds_held", "true") in result.facts
    assert ("hold_days", "180") in result.facts


def test_garbage_bytes_classify_as_irrelevant(rules: RuleSet) -> None:
    result = classify(parse_message(b"\x00\xff\xfe not a message \r\n\r\n\x1b$B"), rules)
    assert result.relevant is False


def test_a_bad_user_rule_file_names_the_file_and_key(tmp_path: Path) -> None:
    from watcher.errors import RulesError

    bad = tmp_path / "my.toml"
    bad.write_text('[[signals.kind]]\nvalue = "account_deactivated"\npattern = "ok"\n'
                   '[[signals.kind]]\nvalue = "account_deactivated"\npattern = "(bad"\n', encoding="utf-8")
    with pytest.raises(RulesError, match=r"my\.toml: signals\.kind\[1\]\.pattern: invalid regex"):
        load_rules([bad])


def test_a_user_rule_file_adds_a_signal(tmp_path: Path) -> None:
    extra = tmp_path / "extra.toml"
    extra.write_text('id = "amazon"\n[[signals.kind]]\nvalue = "account_deactivated"\n'
                     'pattern = "storefront has vanished"\n', encoding="utf-8")
    rules = load_rules([extra])
    amazon = rules.platform("amazon")
    assert amazon is not None and any("storefront" in s.pattern.pattern for s in amazon.kind_signals)


def _mail(sender: str, subject: str, body: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: s@shop.example\r\nSubject: {subject}\r\nDate: Tue, 3 Mar 2026 09:15:00 +0000\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def _plain_notice(body: str) -> bytes:
    return _mail("Amazon <seller-notification@amazon.com>", "Your account", body)


def _rules_with(tmp_path: Path, toml: str) -> RuleSet:
    """Return the packaged rules extended by a user file holding ``toml``."""
    extra = tmp_path / "extra.toml"
    extra.write_text(toml, encoding="utf-8")
    return load_rules([extra])


@pytest.mark.parametrize(
    ("kind", "condition", "counted", "not_counted"),
    [
        ("reinstated", "unless_sentence = '''\\b(once|if)\\b'''",
         "Good news. Your storefront is back, check your listings.",
         "Once your storefront is back, check your listings."),
        ("security_lock", 'requires = "intruder"',
         "An intruder signed in. Your storefront is back, check your listings.",
         "Your storefront is back, check your listings."),
    ],
    ids=["unless_sentence", "requires"],
)
def test_a_signal_counts_only_where_its_condition_allows(
        kind: str, condition: str, counted: str, not_counted: str, tmp_path: Path) -> None:
    rules = _rules_with(
        tmp_path, f'id = "amazon"\n[[signals.kind]]\nvalue = "{kind}"\npattern = "storefront is back"\n{condition}\n'
    )
    assert classify(parse_message(_plain_notice(counted)), rules).kind == kind
    assert classify(parse_message(_plain_notice(not_counted)), rules).kind != kind


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('[[signals.kind]]\nvalue = "reinstated"\npattern = "ok"\nunless_sentence = "(bad"\n',
         r"my\.toml: signals\.kind\[0\]\.unless_sentence: invalid regex"),
        ('[[signals.kind]]\nvalue = "reinstated"\npattern = "ok"\nunless_sentence = ["no_such_veto"]\n',
         r"my\.toml: signals\.kind\[0\]\.unless_sentence: names unknown sentence vetoes"),
        ('[[language.script]]\nvalue = "xx"\npattern = "[a-z]"\n',
         r"language\.script\[\d+\]\.pattern: must match no ASCII character"),
        ('[[concepts.kind]]\nvalue = "funds_held"\nall = ["no_such_concept"]\n',
         r"concepts\.kind\[\d+\]\.all: must list names of concepts\.words"),
        ('[[deadline.relative]]\nunit = "days"\npattern = \'\'\'within (?P<n>\\d+) days|(\\d+) days left\'\'\'\n',
         r"deadline\.relative\[\d+\]\.pattern: every alternative \(\|\) needs the named group"),
        ('id = "stripe"\nreasons_first = ["no_such_reason"]\n',
         r"my\.toml: reasons_first: unknown reasons \['no_such_reason'\]"),
        ('[language]\nscript_share = 2\n', r"language\.script_share: must be a number from 0 to 1"),
    ],
    ids=["bad unless_sentence", "unknown sentence veto", "script matching ASCII", "unknown concept",
         "alternative without its group", "unknown reason first", "script share out of range"],
)
def test_a_bad_rule_in_a_user_file_is_refused_with_its_key(toml: str, problem: str, tmp_path: Path) -> None:
    bad = tmp_path / "my.toml"
    bad.write_text(toml, encoding="utf-8")
    with pytest.raises(RulesError, match=problem):
        load_rules([bad])


@pytest.mark.parametrize(
    ("domain", "imitated"),
    [("amozzon.com", "amazon"), ("amzon-seller.net", "amazon"), ("paypa1-secure.com", "paypal"),
     ("amazon-seller-support.net", "amazon"), ("tanaka-shoten.example", None), ("shopping-tips.example", None),
     ("ebay.de", None)],
)
def test_look_alike_sender_domains_are_told_from_ordinary_words(domain: str, imitated: str | None, rules: RuleSet) -> None:
    found = authenticity.lookalike_of(domain, rules)
    assert (found.id if found else None) == imitated


def test_a_notice_no_phrase_foresaw_is_read_by_its_concepts(tmp_path: Path) -> None:
    rules = _rules_with(
        tmp_path,
        '[concepts.words]\nwidget = [" widget"]\nfrozen = ["frobnicated"]\n'
        '[[concepts.kind]]\nvalue = "listing_removed"\nall = ["widget", "frozen", "addressed"]\nunless = ["conditional"]\n',
    )
    said = classify(parse_message(_mail("notice@amazon.com", "Hello", "Sadly, we frobnicated your widget today.")), rules)
    assert (said.relevant, said.kind) == (True, "listing_removed")
    assert any(e.field == "kind" and "concepts.kind" in e.rule for e in said.evidence)
    conditional = classify(parse_message(_mail("notice@amazon.com", "Hello", "If we frobnicated your widget, write.")), rules)
    assert not conditional.relevant


def test_concepts_do_not_read_mail_that_only_names_the_platform_in_its_body(rules: RuleSet) -> None:
    body = "Ihre Auszahlungen wurden pausiert, schreibt uns ein Leser über sein Stripe-Konto."
    article = classify(parse_message(_mail("news@blog.example", "Leserbrief", body)), rules)
    notice = classify(parse_message(_mail("notifications@stripe.com", "Hinweis", body)), rules)
    assert not article.relevant
    assert (notice.relevant, notice.kind) == (True, "funds_held")


@pytest.mark.parametrize(
    ("sender", "subject", "body"),
    [
        ("seller-notification@amazon.com", "Please verify your email address",
         "Hello, a new user was added to your Seller Central account. Please verify your email address by clicking the "
         "link below to finish setting up your login."),
        ("service@paypal.com", "Your hold has been released",
         "Good news: the hold on your payment of $120.00 has been released and the money is now available in your balance."),
        ("fba-noreply@amazon.com", "Your removal order has shipped",
         "Your removal order 12345 has shipped from our fulfillment center. Removed units: 24."),
        ("seller-news@amazon.com", "Tips to keep your account healthy",
         "Learn how to avoid account deactivation: keep your order defect rate under 1% and respond to buyers within 24 hours."),
        ("info@ebay.com", "Confirm your identity to finish signing in",
         "We need to confirm it's you. Enter the code 123456 to finish signing in to your eBay account."),
    ],
)
def test_ordinary_platform_mail_with_alarming_words_is_not_a_notice(sender: str, subject: str, body: str,
                                                                     rules: RuleSet) -> None:
    assert not classify(parse_message(_mail(sender, subject, body)), rules).relevant


def test_the_reason_comes_from_the_why_paragraph_before_passing_mentions(rules: RuleSet) -> None:
    body = (
        "We have removed your selling privileges.\n\n"
        "We took this action because you ship orders bought from another retailer. That is not allowed under "
        "our drop shipping policy.\n\n"
        "After 90 days, funds minus any A-to-z claims will be transferred."
    )
    said = classify(parse_message(_plain_notice(body)), rules)
    assert (said.kind, said.reason) == ("account_deactivated", "listing_policy")
    assert said.reason_text is not None and "drop shipping policy" in said.reason_text
    without_why = classify(parse_message(_plain_notice(body.replace("drop shipping", "selling"))), rules)
    assert without_why.reason == "performance_metrics"  # the only reason signal left is the passing mention


def test_a_date_on_the_day_the_mail_was_sent_is_an_event_not_a_deadline(rules: RuleSet) -> None:
    said = classify(parse_message(_plain_notice(
        "On March 3, 2026 someone signed in from a new device. We have locked your account; "
        "reset your password by March 10, 2026.")), rules)
    assert said.deadline is not None and said.deadline.isoformat() == "2026-03-10"
    same_day_only = classify(parse_message(_plain_notice(
        "On March 3, 2026 someone signed in from a new device. We have locked your account.")), rules)
    assert same_day_only.deadline is None


def test_a_bilingual_notice_is_in_the_language_it_opens_with(rules: RuleSet) -> None:
    english = "We have suspended your seller account. Your listings are no longer published on the site. " * 8
    chinese = "您的卖家账户已被暂停，商品已下架。此次暂停可以申诉，请在卖家中心提交工单并附上行动计划和发票。" * 3
    opens_english = classify(parse_message(_plain_notice(english + "\n\n" + chinese)), rules)
    opens_chinese = classify(parse_message(_plain_notice(chinese + "\n\n" + english)), rules)
    assert (opens_english.language, opens_chinese.language) == ("en", "zh")


def test_a_few_characters_of_another_script_do_not_change_the_language(rules: RuleSet) -> None:
    english = ("Your seller account for 深圳市鸿拓贸易有限公司 has been deactivated. Your listings are no longer "
               "published and your funds are held while we review the case. ") * 2
    assert classify(parse_message(_plain_notice(english)), rules).language == "en"
    chinese = "您的卖家账户（Shenzhen Hongtuo Trading Co., Ltd., Seller ID A1B2C3D4E5）已被停用，所有商品已下架。"
    assert classify(parse_message(_plain_notice(chinese)), rules).language == "zh"


def test_a_platform_may_put_a_reason_before_the_common_order(rules: RuleSet) -> None:
    body = ("We have paused payouts on your account. Your business sells restricted products and presents a "
            "high level of risk under the services agreement.")
    stripe = classify(parse_message(_mail("Stripe <notifications@stripe.com>", "Payouts paused", body)), rules)
    assert (stripe.kind, stripe.reason) == ("funds_held", "acceptable_use")  # stripe.toml: reasons_first
    amazon = classify(parse_message(_mail("Amazon <seller-notification@amazon.com>", "Payouts paused", body)), rules)
    assert amazon.reason == "restricted_product"  # the common reason_order


def test_a_notice_quoted_by_someone_else_is_an_unverified_copy_with_its_deadline(rules: RuleSet) -> None:
    body = ("Hi Marco,\nas you asked, the full notice is below.\nEmily\n\n----- Original notice -----\n"
            "From: Amazon Services <seller-notification@amazon.com>\nSent: Monday, March 2, 2026 4:55 PM\n"
            "Subject: Your account is at risk of deactivation\n\nYour account is at risk of deactivation. If you "
            "do not submit a plan of action by 07/16/2026, your selling privileges will be deactivated.")
    copy = classify(parse_message(_mail("Emily Hart <emily@harborlane.example>", "Re: the Amazon notice", body)), rules)
    assert (copy.kind, copy.authenticity, str(copy.deadline)) == ("deactivation_pending", "unverified", "2026-07-16")
    posing = classify(parse_message(_mail("Amazon Services <alerts@amazon-seller-help.example>", "Re: the Amazon notice",
                                          body)), rules)
    assert posing.authenticity == "suspected_phishing"


@pytest.mark.parametrize(
    ("sender", "subject", "body", "kind"),
    [
        ("Amazon <product-compliance@amazon.com>", "Warning: a listing on your account",
         "One of your listings does not comply with our Restricted Products policy. This notification has been "
         "recorded in your Account Health. We have not taken any action against your account.", "policy_warning"),
        ("Shopify <trust-safety@shopify.com>", "Re: Store terminated",
         "After a further review, we are upholding our decision. Your store remains terminated for operating in "
         "violation of our Acceptable Use Policy.", "appeal_update"),
        ("Amazon <account-security@amazon.com>", "Your seller account has been locked",
         "An unauthorized user may have accessed your account, so we have temporarily locked access to it and "
         "disabled editing of your listings until access is restored.", "security_lock"),
    ],
    ids=["warning recorded in account health", "decision upheld", "restored only later"],
)
def test_notices_worded_as_the_last_unseen_batches_worded_them(sender: str, subject: str, body: str, kind: str,
                                                                rules: RuleSet) -> None:
    said = classify(parse_message(_mail(sender, subject, body)), rules)
    assert (said.relevant, said.kind) == (True, kind)


def test_an_action_said_not_to_have_happened_does_not_name_the_kind(rules: RuleSet) -> None:
    said = classify(parse_message(_plain_notice(
        "This warning is recorded on your Account Health page. No listings have been removed, and we have not "
        "removed your selling privileges.")), rules)
    assert (said.relevant, said.kind) == (True, "policy_warning")


def test_a_caution_about_repeated_violations_is_not_a_pending_deactivation(rules: RuleSet) -> None:
    body = "We have removed the listings below.\n\nIf this happens again, your account will be deactivated."
    assert classify(parse_message(_plain_notice(body)), rules).kind == "listing_removed"
    threat = "We have removed the listings below.\n\nIf you do not reply within 7 days, your account will be deactivated."
    assert classify(parse_message(_plain_notice(threat)), rules).kind == "deactivation_pending"


def test_a_forwarded_notice_is_in_the_language_of_the_notice_not_of_the_cover_note(rules: RuleSet) -> None:
    cover = "王总：美国站今天早上收到下面这封邮件，账户被停用了，请您看一下，我下午准备申诉材料。\n\n张磊"
    quoted = ("------------------ 原始邮件 ------------------\n发件人: \"Amazon\" <seller-notification@amazon.com>\n"
              "主题: Your Amazon.com Selling Account\n\nHello,\n\nYour Amazon seller account has been deactivated and "
              "your listings have been removed. We took this action because your account is related to another account.")
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Date"] = "张磊 <zl@trade.example>", "boss@trade.example", "Tue, 3 Mar 2026 09:15:00 +0000"
    mail["Subject"] = "转发：Your Amazon.com Selling Account"
    mail.set_content(f"{cover}\n\n{quoted}\n")
    said = classify(parse_message(mail.as_bytes()), rules)
    assert (said.kind, said.language, said.authenticity) == ("account_deactivated", "en", "unverified")


def test_a_forward_names_its_platform_in_the_quoted_from_line(rules: RuleSet) -> None:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Date"] = "Marco <marco@pine.example>", "finance@pine.example", "Tue, 3 Mar 2026 09:15:00 +0000"
    mail["Subject"] = "Fwd: Action required"
    mail.set_content(
        "Can you handle this one?\n\n> From: Stripe\n> Subject: Action required\n>\n"
        "> Your payouts are fine for now, but we need to confirm who owns this business.\n"
        "> Please upload a document about your business, such as a tax registration, within 10 days.\n"
    )
    said = classify(parse_message(mail.as_bytes()), rules)
    assert (said.platform, said.kind, said.authenticity) == ("stripe", "verification_required", "unverified")
    assert any(e.field == "platform" and e.rule == "platform named in the forwarded From line" for e in said.evidence)
