"""Tests for watcher.guidance: the packaged playbooks, the lookup order and user override files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from watcher import guidance, model
from watcher.errors import RulesError

PLATFORMS = (
    "amazon", "ebay", "etsy", "walmart", "paypal", "shopify", "stripe", "temu", "shopee", "tiktok_shop",
)
CJK = re.compile(r"[\u4e00-\u9fff]")
# Hosts and addresses the texts may name: the platforms' own (domain.md §3 and the brief).
OWN_DOMAINS = ("amazon.com", "ebay.com", "etsy.com", "walmart.com", "paypal.com", "shopify.com", "stripe.com")
ADDRESS_LIKE = re.compile(r"[\w.-]*\.(?:com|net|org|cn|io|co)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def playbooks() -> guidance.Playbooks:
    return guidance.load_playbooks()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("kind", model.KINDS)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_platform_and_kind_has_its_own_entry(
    playbooks: guidance.Playbooks, platform: str, kind: str, language: str
) -> None:
    result = playbooks.lookup(platform, kind, None, "verified", language)
    assert result.source == f"{platform}/{kind}"
    assert 3 <= len(result.steps) <= 7
    if language == "zh":
        assert all(CJK.search(piece) for piece in (result.title, *result.steps))
    else:
        assert not any(CJK.search(piece) for piece in (result.title, *result.steps))


def test_every_packaged_entry_has_english_and_chinese_with_the_same_number_of_steps(
    playbooks: guidance.Playbooks,
) -> None:
    for source, entry in playbooks.entries.items():
        assert set(entry.texts) == {"en", "zh"}, source
        english, chinese = entry.texts["en"], entry.texts["zh"]
        assert len(english.steps) == len(chinese.steps), source
        if source != "generic/unverified":
            assert 3 <= len(english.steps) <= 7, source
            assert CJK.search(chinese.title) and not CJK.search(english.title), source


def test_packaged_texts_name_no_host_outside_the_platforms_own_domains(
    playbooks: guidance.Playbooks,
) -> None:
    texts = [
        piece
        for entry in playbooks.entries.values()
        for text in entry.texts.values()
        for piece in (text.title, *text.steps)
    ]
    texts += [
        value
        for facts in playbooks.facts.values()
        for by_language in facts.values()
        for value in by_language.values()
    ]
    named = {match.group(0).lower() for text in texts for match in ADDRESS_LIKE.finditer(text)}
    assert named, "the texts should name at least the platforms' own sites"
    strangers = {host for host in named if not host.split("@")[-1].endswith(OWN_DOMAINS)}
    assert strangers == set()


@pytest.mark.parametrize(
    ("platform", "kind", "reason", "expected"),
    [
        ("amazon", "account_deactivated", "related_account", "amazon/account_deactivated/related_account"),
        ("amazon", "account_deactivated", "unpaid_fees", "amazon/account_deactivated"),
        ("amazon", "account_deactivated", None, "amazon/account_deactivated"),
        ("mercadolibre", "account_deactivated", "related_account", "generic/account_deactivated/related_account"),
        (None, "listing_removed", "intellectual_property", "generic/listing_removed/intellectual_property"),
        ("mercadolibre", "funds_held", "unpaid_fees", "generic/funds_held"),
        ("amazon", None, None, "generic/default"),
        (None, "no_such_kind", None, "generic/default"),
    ],
)
def test_lookup_takes_the_most_specific_entry_that_exists(
    playbooks: guidance.Playbooks, platform: str | None, kind: str | None, reason: str | None,
    expected: str,
) -> None:
    assert playbooks.lookup(platform, kind, reason, "verified", "en").source == expected


def test_a_platform_entry_for_the_kind_wins_over_a_generic_entry_for_the_reason(
    tmp_path: Path,
) -> None:
    generic_reason = write(tmp_path, "generic-reason.toml", """
platform = "generic"
[funds_held.unpaid_fees.en]
title = "Generic unpaid fees"
steps = ["Pay the fees."]
""")
    loaded = guidance.load_playbooks([generic_reason])
    assert loaded.lookup("ebay", "funds_held", "unpaid_fees", "verified", "en").source == "ebay/funds_held"
    assert loaded.lookup("x", "funds_held", "unpaid_fees", "verified", "en").source == (
        "generic/funds_held/unpaid_fees"
    )


@pytest.mark.parametrize("language", ["pt", "xx", "", "ja"])
def test_a_language_without_texts_falls_back_to_english(
    playbooks: guidance.Playbooks, language: str
) -> None:
    english = playbooks.lookup("amazon", "funds_held", None, "verified", "en")
    assert playbooks.lookup("amazon", "funds_held", None, "verified", language) == english


@pytest.mark.parametrize("language", ["zh-CN", "zh_Hans", "ZH"])
def test_a_regional_language_code_uses_its_base_language(
    playbooks: guidance.Playbooks, language: str
) -> None:
    chinese = playbooks.lookup("amazon", "funds_held", None, "verified", "zh")
    assert playbooks.lookup("amazon", "funds_held", None, "verified", language) == chinese


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_suspected_phishing_gets_the_warning_and_none_of_the_platform_steps(
    playbooks: guidance.Playbooks, platform: str, language: str
) -> None:
    warning = playbooks.lookup(platform, "account_deactivated", "related_account",
                               "suspected_phishing", language)
    playbook = playbooks.lookup(platform, "account_deactivated", "related_account", "verified", language)
    assert warning.source == "generic/phishing"
    assert not set(warning.steps) & set(playbook.steps)
    site = playbooks.facts[platform]["site"][language]
    assert any(site in step for step in warning.steps)
    assert not any("{" in step for step in warning.steps)


@pytest.mark.parametrize(
    ("platform", "address"),
    [("amazon", "stop-spoofing@amazon.com"), ("paypal", "phishing@paypal.com")],
)
def test_the_phishing_warning_names_the_platforms_report_address(
    playbooks: guidance.Playbooks, platform: str, address: str
) -> None:
    for language in ("en", "zh"):
        warning = playbooks.lookup(platform, "security_lock", None, "suspected_phishing", language)
        assert any(address in step for step in warning.steps)


def test_the_phishing_warning_names_sellercentral_for_amazon_in_english(
    playbooks: guidance.Playbooks,
) -> None:
    warning = playbooks.lookup("amazon", "funds_held", None, "suspected_phishing", "en")
    assert warning.title == "Suspected phishing: do not act on this email"
    assert "Do not click its links" in warning.steps[0]
    assert "sellercentral.amazon.com" in warning.steps[1]


def test_a_phishing_warning_without_a_platform_uses_the_generic_wording(
    playbooks: guidance.Playbooks,
) -> None:
    warning = playbooks.lookup(None, None, None, "suspected_phishing", "en")
    assert warning.steps[0].startswith("This email claims to come from the platform,")
    assert "Report the email as phishing in your mail program" in warning.steps[2]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_an_unverified_notice_first_asks_to_confirm_it_in_the_seller_center(
    playbooks: guidance.Playbooks, language: str
) -> None:
    verified = playbooks.lookup("amazon", "account_deactivated", "related_account", "verified", language)
    unverified = playbooks.lookup("amazon", "account_deactivated", "related_account", "unverified",
                                  language)
    assert unverified.steps[1:] == verified.steps
    assert unverified.source == verified.source == "amazon/account_deactivated/related_account"
    assert playbooks.facts["amazon"]["site"][language] in unverified.steps[0]


def test_the_related_account_playbook_follows_the_domain_steps(playbooks: guidance.Playbooks) -> None:
    result = playbooks.lookup("amazon", "account_deactivated", "related_account", "verified", "en")
    assert "still show as for sale" in result.steps[0]
    assert "2-step verification" in result.steps[1]
    assert "reactivation date" in result.steps[2]
    assert "both sides of your ID card" in result.steps[3]
    assert "Never submit false information" in result.steps[4]


def test_a_user_file_overrides_one_entry_and_leaves_the_others(tmp_path: Path) -> None:
    override = write(tmp_path, "mine.toml", """
platform = "amazon"
[account_deactivated.en]
title = "Call our agency first"
steps = ["Call the agency on +1 555 0100.", "Do not appeal on your own."]
""")
    loaded = guidance.load_playbooks([override])
    assert loaded.lookup("amazon", "account_deactivated", None, "verified", "en") == model.Guidance(
        title="Call our agency first",
        steps=("Call the agency on +1 555 0100.", "Do not appeal on your own."),
        source="amazon/account_deactivated",
    )
    # The whole entry is replaced, so a language the user did not write falls back to their English.
    assert loaded.lookup("amazon", "account_deactivated", None, "verified", "zh").title == (
        "Call our agency first"
    )
    packaged = guidance.load_playbooks()
    for kind, reason in (("account_deactivated", "related_account"), ("funds_held", None)):
        assert loaded.lookup("amazon", kind, reason, "verified", "en") == (
            packaged.lookup("amazon", kind, reason, "verified", "en")
        )


def test_a_later_user_file_wins_over_an_earlier_one(tmp_path: Path) -> None:
    first = write(tmp_path, "first.toml", """
platform = "ebay"
site.en = "first site"
[funds_held.en]
title = "First"
steps = ["One."]
""")
    second = write(tmp_path, "second.toml", """
platform = "ebay"
[funds_held.en]
title = "Second"
steps = ["Two."]
""")
    loaded = guidance.load_playbooks([first, second])
    assert loaded.lookup("ebay", "funds_held", None, "verified", "en").title == "Second"
    assert loaded.lookup("ebay", "funds_held", None, "unverified", "en").steps[0].count("first site") == 1


def test_a_user_file_can_add_a_new_platform(tmp_path: Path) -> None:
    new = write(tmp_path, "mercadolibre.toml", """
platform = "mercadolibre"
site.en = "Mercado Libre's seller center"
[account_deactivated.en]
title = "Mercado Libre suspended your account"
steps = ["Open the seller center yourself."]
""")
    loaded = guidance.load_playbooks([new])
    result = loaded.lookup("mercadolibre", "account_deactivated", None, "unverified", "en")
    assert result.source == "mercadolibre/account_deactivated"
    assert "Mercado Libre's seller center" in result.steps[0]


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ('platform = "amazon"\n[account_deactivated.en]\ntitle = "T"\nsteps = "Do it."\n',
         "account_deactivated.en.steps"),
        ('platform = "amazon"\n[account_deactivated.en]\ntitle = "T"\nsteps = ["ok", 3]\n',
         "account_deactivated.en.steps[1]"),
        ('platform = "amazon"\n[account_deactivated.en]\nsteps = ["ok"]\n',
         "account_deactivated.en.title"),
        ('platform = "amazon"\n[account_deactivated.zh]\ntitle = "T"\nsteps = ["ok"]\n',
         "account_deactivated"),
        ('platform = "amazon"\n[account_deactivate.en]\ntitle = "T"\nsteps = ["ok"]\n',
         "account_deactivate"),
        ('platform = "amazon"\n[account_deactivated.related_acount.en]\ntitle = "T"\nsteps = ["ok"]\n',
         "account_deactivated.related_acount"),
        ('platform = "amazon"\n[funds_held.en]\ntitle = "T"\nsteps = ["Go to {sight}."]\n',
         "funds_held.en.steps[0]"),
        ('platform = "amazon"\n[phishing.en]\ntitle = "T"\nsteps = ["ok"]\n', "phishing"),
        ('[funds_held.en]\ntitle = "T"\nsteps = ["ok"]\n', "platform"),
    ],
)
def test_a_bad_user_file_raises_rules_error_naming_the_file_and_the_key(
    tmp_path: Path, content: str, key: str
) -> None:
    bad = write(tmp_path, "bad-playbook.toml", content)
    with pytest.raises(RulesError) as raised:
        guidance.load_playbooks([bad])
    message = str(raised.value)
    assert message.startswith(f"{bad}: ")
    assert f"at '{key}'" in message


def test_a_bad_user_file_reports_every_problem_at_once(tmp_path: Path) -> None:
    bad = write(tmp_path, "two-problems.toml", """
platform = "amazon"
[funds_held.en]
title = ""
steps = []
""")
    with pytest.raises(RulesError) as raised:
        guidance.load_playbooks([bad])
    assert "at 'funds_held.en.title'" in str(raised.value)
    assert "at 'funds_held.en.steps'" in str(raised.value)


def test_a_user_file_with_broken_toml_names_the_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "broken.toml", 'platform = "amazon"\n[funds_held.en\n')
    with pytest.raises(RulesError, match=r"broken\.toml: invalid TOML: .*line 2"):
        guidance.load_playbooks([bad])


def test_a_missing_user_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(RulesError, match=r"absent\.toml: cannot read"):
        guidance.load_playbooks([missing])
