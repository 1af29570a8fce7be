"""Address parsing, header forms and envelope forms (IDNA vs SMTPUTF8)."""

from __future__ import annotations

import email
import email.policy
from email.header import decode_header, make_header

import pytest

from fluxmail.config.urls import parse_host
from fluxmail.errors import ConfigurationError, MessageError
from fluxmail.message import addresses
from fluxmail.message.addresses import Address, idna_domain, parse_address, parse_addresses
from fluxmail.message.headers import make_message_id


@pytest.mark.parametrize(
    ("value", "name", "addr"),
    [
        ("ann@example.com", "", "ann@example.com"),
        ("  ann@example.com  ", "", "ann@example.com"),
        ("<ann@example.com>", "", "ann@example.com"),
        ('"Ann Example" <ann@example.com>', "Ann Example", "ann@example.com"),
        ("Ann Example <ann@example.com>", "Ann Example", "ann@example.com"),
        ('"Example, Ann" <ann@example.com>', "Example, Ann", "ann@example.com"),
        (r'"A \"quoted\" name" <ann@example.com>', 'A "quoted" name', "ann@example.com"),
        ("Dr. Who <who@example.com>", "Dr. Who", "who@example.com"),
        ("José <jose@example.com>", "José", "jose@example.com"),
        ("first.o'neil+tag@sub.example.co.uk", "", "first.o'neil+tag@sub.example.co.uk"),
        ("ann@bücher.de", "", "ann@bücher.de"),
        ("用户@例子.广告", "", "用户@例子.广告"),
        ("dev@localhost", "", "dev@localhost"),
        (("Ann, the Example", "ann@example.com"), "Ann, the Example", "ann@example.com"),
        (Address("ann@example.com", "Ann"), "Ann", "ann@example.com"),
    ],
)
def test_accepted_address_forms(
    value: str | tuple[str, str] | Address, name: str, addr: str
) -> None:
    """Every documented input form parses to the same (name, addr) the caller meant."""
    parsed = parse_address(value, field="to")
    assert (parsed.name, parsed.addr) == (name, addr)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ann",
        "ann@",
        "@example.com",
        "ann@@example.com",
        "ann..x@example.com",
        ".ann@example.com",
        "ann.@example.com",
        "ann@-example.com",
        "ann@example-.com",
        "ann@exa_mple.com",
        "ann@[127.0.0.1]",
        '"ann smith"@example.com',
        "ann smith@example.com",
        "ann@example.com, bob@example.com",
        "Smith, Ann <ann@example.com>",
        "alice@example.org)<bob@example.org>",  # CVE-2023-27043 shape
        "alice@example.org <bob@example.org>",
        "Ann <ann@example.com",
        "Ann ann@example.com>",
        "Ann <ann@example.com> trailing",
        "(comment) ann@example.com",
        "group: ann@example.com;",
        "a" * 65 + "@example.com",
        "ann@" + "a" * 64 + ".com",
        "ann@" + ".".join(["abcdefghij"] * 25) + ".com",
        ("ann@example.com", "bob@example.com"),
        ("Ann",),
        b"ann@example.com",
        42,
    ],
)
def test_malformed_or_ambiguous_addresses_are_refused(value: object) -> None:
    """Malformed, ambiguous or reinterpretable addresses raise invalid_address."""
    with pytest.raises(MessageError) as caught:
        parse_addresses(value, field="to")  # type: ignore[arg-type]
    assert caught.value.code == "invalid_address"


@pytest.mark.parametrize(
    "bad",
    ["\r", "\n", "\x00", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\t"],
)
@pytest.mark.parametrize("where", ["addr", "name", "string"])
def test_control_characters_in_addresses_are_injection(bad: str, where: str) -> None:
    """Line-breaking and control characters in an address or display name: header_injection."""
    value: str | tuple[str, str]
    if where == "addr":
        value = ("Ann", f"ann@example.com{bad}Bcc: x@evil.example")
    elif where == "name":
        value = (f"Ann{bad}Bcc: x@evil.example", "ann@example.com")
    else:
        value = f"Ann{bad} <ann@example.com>"
    with pytest.raises(MessageError) as caught:
        parse_address(value, field="to")
    assert caught.value.code == "header_injection"


def test_parse_addresses_accepts_none_one_and_many() -> None:
    """None gives (), one address gives a 1-tuple, a list keeps its order."""
    assert parse_addresses(None, field="cc") == ()
    assert parse_addresses("a@example.com", field="cc") == (Address("a@example.com"),)
    assert parse_addresses(("A", "a@example.com"), field="cc") == (Address("a@example.com", "A"),)
    many = parse_addresses(["b@example.com", ("A", "a@example.com")], field="cc")
    assert [a.addr for a in many] == ["b@example.com", "a@example.com"]


def test_local_domain_and_smtputf8_flag() -> None:
    """local/domain split at the last @; only a non-ASCII local part needs SMTPUTF8."""
    assert Address("ann@bücher.de").local == "ann"
    assert Address("ann@bücher.de").domain == "bücher.de"
    assert not Address("ann@bücher.de").needs_smtputf8
    assert Address("jörg@example.com").needs_smtputf8


def test_envelope_uses_idna_without_smtputf8() -> None:
    """International domains go on the wire as IDNA unless the server offers SMTPUTF8."""
    address = Address("ann@bücher.de")
    assert address.envelope(smtputf8=False) == "ann@xn--bcher-kva.de"
    assert address.envelope(smtputf8=True) == "ann@bücher.de"
    assert Address("ann@example.com").envelope(smtputf8=False) == "ann@example.com"


def test_non_ascii_local_part_needs_smtputf8() -> None:
    """A non-ASCII local part cannot be downgraded: smtputf8_required without SMTPUTF8."""
    address = Address("jörg@bücher.de")
    with pytest.raises(MessageError) as caught:
        address.envelope(smtputf8=False)
    assert caught.value.code == "smtputf8_required"
    assert address.envelope(smtputf8=True) == "jörg@bücher.de"


@pytest.mark.parametrize(
    ("address", "header"),
    [
        (Address("ann@example.com"), "ann@example.com"),
        (Address("ann@example.com", "Ann Example"), "Ann Example <ann@example.com>"),
        (Address("ann@example.com", "Example, Ann"), '"Example, Ann" <ann@example.com>'),
        (Address("ann@example.com", 'Say "hi"'), r'"Say \"hi\"" <ann@example.com>'),
        (Address("ann@example.com", "Back\\slash"), r'"Back\\slash" <ann@example.com>'),
        (Address("ann@bücher.de", "Ann"), "Ann <ann@xn--bcher-kva.de>"),
        (Address("jörg@bücher.de"), "jörg@bücher.de"),
    ],
)
def test_header_value_forms(address: Address, header: str) -> None:
    """Header form: bare atoms, quoted specials, IDNA domain unless the local part is UTF-8."""
    assert address.header_value() == header


@pytest.mark.parametrize(
    "name",
    [
        "José Müller",
        "山田 太郎",
        "Ünïcödé " * 12,
        "=?utf-8?q?not-encoded?=",
        "x" * 200,
        "Émoji 😀 name",
    ],
)
def test_display_names_decode_to_what_was_given(name: str) -> None:
    """Non-ASCII, long or encoded-word-like names are RFC 2047 encoded and decode back exactly."""
    value = Address("ann@example.com", name).header_value()
    assert value.isascii()
    assert value.endswith(" <ann@example.com>")
    phrase = value[: -len(" <ann@example.com>")]
    # RFC 2047 §6.2: whitespace between adjacent encoded words is not part of the text.
    assert str(make_header(decode_header(phrase))) == name


def test_short_non_ascii_name_round_trips_through_the_stdlib_parser() -> None:
    """A one-encoded-word display name reads back exactly with email.policy.default."""
    value = Address("ann@bücher.de", "Jöhn Smïth").header_value()
    raw = f"To: {value}\r\n\r\n".encode("ascii")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    (person,) = parsed["To"].addresses
    assert (person.display_name, person.addr_spec) == ("Jöhn Smïth", "ann@xn--bcher-kva.de")


def test_bad_idna_domain_is_invalid() -> None:
    """A domain the idna codec cannot encode (label over 63 octets once encoded) is refused."""
    with pytest.raises(MessageError) as caught:
        parse_address("ann@" + "ü" * 70 + ".de", field="to")
    assert caught.value.code == "invalid_address"


def test_idna_2008_keeps_sharp_s() -> None:
    """IDNA 2008: faß.de is its own domain (xn--fa-hia.de), not IDNA 2003's fass.de."""
    assert idna_domain("faß.de") == "xn--fa-hia.de"
    address = parse_address("Ann <ann@faß.de>", field="to")
    assert address.envelope(smtputf8=False) == "ann@xn--fa-hia.de"
    assert address.header_value() == "Ann <ann@xn--fa-hia.de>"


@pytest.mark.parametrize("domain", ["BÜCHER.de", "ｂüｃｈｅｒ.ｄｅ", "ＢÜＣＨＥＲ.ＤＥ"])
def test_uts46_maps_case_and_fullwidth_forms(domain: str) -> None:
    """UTS #46 mapping: upper case and fullwidth letters reach the same A-label."""
    assert idna_domain(domain) == "xn--bcher-kva.de"
    assert parse_address(f"ann@{domain}", field="to").envelope(smtputf8=False) == (
        "ann@xn--bcher-kva.de"
    )


@pytest.mark.parametrize(
    "domain",
    [
        "☃.example",  # a symbol: valid in IDNA 2003 (xn--n3h), disallowed in IDNA 2008
        "bücher-.de",  # a label may not end with a hyphen
        "xn--bücher.de",  # a U-label may not start with the ACE prefix
        "a\u200db.bücher.de",  # ZERO WIDTH JOINER outside its CONTEXTJ rule
    ],
)
def test_labels_idna_2008_refuses_are_invalid_addresses(domain: str) -> None:
    """A label without an IDNA 2008 form is invalid_address (at parse time, before sending)."""
    with pytest.raises(UnicodeError):
        idna_domain(domain)
    with pytest.raises(MessageError) as caught:
        parse_address(f"ann@{domain}", field="to")
    assert caught.value.code == "invalid_address"


def test_message_id_and_host_use_the_same_idna_function() -> None:
    """Message-IDs and FLUXMAIL_HOST go through idna_domain too (one IDNA rule everywhere)."""
    assert make_message_id("faß.de").endswith("@xn--fa-hia.de>")
    assert make_message_id("☃.example").endswith("@fluxmail.invalid>")
    assert parse_host("smtp.faß.de").host == "smtp.xn--fa-hia.de"
    with pytest.raises(ConfigurationError) as caught:
        parse_host("smtp.☃.example")
    assert caught.value.code == "invalid_host"


def test_address_character_classes_are_exactly_the_rfc_sets() -> None:
    """atext + non-ASCII for local parts, letters/digits/hyphen + non-ASCII for labels."""
    atext = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
    alnum = {c for c in atext if c.isalnum()}
    for code in range(0x110000):
        char = chr(code)
        wide = code >= 0x80
        assert bool(addresses._LOCAL().fullmatch(char)) == (wide or char in atext), hex(code)
        assert bool(addresses._DOMAIN().fullmatch(char)) == (wide or char in alnum), hex(code)
    assert addresses._DOMAIN().fullmatch("a-b.c") and not addresses._DOMAIN().fullmatch("a-.b")


def test_an_address_compares_hashes_and_shows_as_the_dataclass_would() -> None:
    """Address writes out __eq__, __hash__ and __repr__ (cold start): they behave as
    ``@dataclass(frozen=True)``'s generated ones, and the fields stay frozen."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Generated:
        addr: str
        name: str = ""

    Generated.__qualname__ = "Address"  # the generated repr shows the class's qualified name
    pairs = [("ada@example.com", ""), ("ada@example.com", "Ada"), ("bob@example.com", "Ada")]
    for addr, name in pairs:
        for other_addr, other_name in pairs:
            same = Address(addr, name) == Address(other_addr, other_name)
            assert same is (Generated(addr, name) == Generated(other_addr, other_name))
        assert hash(Address(addr, name)) == hash(Generated(addr, name))
        assert repr(Address(addr, name)) == repr(Generated(addr, name))
    assert Address("ada@example.com") != ("ada@example.com", "")  # not equal to a plain tuple
    assert len({Address("a@x.org"), Address("a@x.org"), Address("a@x.org", "A")}) == 2
    assert [f.name for f in dataclasses.fields(Address)] == ["addr", "name"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Address("ada@example.com").addr = "eve@example.com"  # type: ignore[misc]
