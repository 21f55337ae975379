"""Each operator of a rule's condition, as the engine decides it: typed comparisons, facts as
operands, presence, text and links in their normal form, combinations, and every case that cannot
be evaluated failing closed (a deny or a demand for approval matches; an `auto` rule does not)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.models import Effect, Mode, Tier
from contracts.policy import MAX_DEPTH, Condition
from policy import CallContext, PolicyError, parse_policy
from policy.engine import matches
from runtime.settings import EXAMPLE_POLICY

ARG_KINDS = {
    "amount_usd": "number",
    "memo": "string",
    "to": "string",
    "url": "string",
    "count": "number",
    "flag": "bool",
    "changes": "object",
    "changes.*": "string",
    "tags": "list",
}
FACT_KINDS = {"known_payee": "bool", "balance_usd": "number", "holder": "string"}


def call(args: dict[str, Any] | None = None, facts: dict[str, Any] | None = None, declared: bool = True) -> CallContext:
    return CallContext(
        workspace="acme",
        agent="support",
        requested_by="u_alice",
        mode=Mode.AUTO,
        tool="bank.pay",
        effect=Effect.WRITE,
        tier=Tier.HIGH,
        args=args or {},
        facts=facts or {},
        arg_kinds=ARG_KINDS if declared else {},  # type: ignore[arg-type]
        fact_kinds=FACT_KINDS if declared else {},  # type: ignore[arg-type]
    )


def cond(**given: Any) -> Condition:
    return Condition.model_validate(given)


def verdicts(condition: Condition, context: CallContext) -> tuple[bool, bool]:
    """(matches for a deny or require_approval rule, matches for an auto rule)."""
    return matches(condition, context), matches(condition, context, lifts=True)


HOLDS, FAILS, UNKNOWN = (True, True), (False, False), (True, False)


# ---- typed comparisons ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "args", "expected"),
    [
        ({"arg": "amount_usd", "eq": 50}, {"amount_usd": 50}, HOLDS),
        # A Decimal argument travels as a string; the catalogue says it is a number.
        ({"arg": "amount_usd", "eq": 50}, {"amount_usd": "50.00"}, HOLDS),
        ({"arg": "amount_usd", "eq": 50.5}, {"amount_usd": "50.50"}, HOLDS),
        ({"arg": "amount_usd", "ne": 50}, {"amount_usd": "50.01"}, HOLDS),
        # A string literal never equals a number: the value is of another kind, so it fails closed.
        ({"arg": "amount_usd", "eq": "50"}, {"amount_usd": 50}, UNKNOWN),
        ({"arg": "amount_usd", "not_in": ["50"]}, {"amount_usd": 50}, UNKNOWN),
        ({"arg": "amount_usd", "not_in": [50]}, {"amount_usd": 50}, FAILS),
        ({"arg": "amount_usd", "not_in": [50]}, {"amount_usd": 51}, HOLDS),
        ({"arg": "amount_usd", "in": [10, 20]}, {"amount_usd": "20.00"}, HOLDS),
        # true is a bool: neither the string "true" nor 1 is one.
        ({"arg": "flag", "eq": True}, {"flag": True}, HOLDS),
        ({"arg": "flag", "eq": True}, {"flag": "true"}, UNKNOWN),
        ({"arg": "flag", "eq": True}, {"flag": 1}, UNKNOWN),
        ({"arg": "flag", "not_in": [True]}, {"flag": False}, HOLDS),
        ({"arg": "memo", "not_in": ["true"]}, {"memo": "true"}, FAILS),
        # A string field holding digits is a string, not the number 50.
        ({"arg": "memo", "eq": 50}, {"memo": "50"}, UNKNOWN),
        ({"arg": "memo", "eq": "ORD-1"}, {"memo": "ORD-1"}, HOLDS),
        ({"arg": "memo", "eq": "ORD-1"}, {"memo": "ord-1"}, FAILS),
        # Missing or null: cannot be evaluated.
        ({"arg": "amount_usd", "eq": 50}, {}, UNKNOWN),
        ({"arg": "amount_usd", "gt": 10}, {"amount_usd": None}, UNKNOWN),
        ({"arg": "amount_usd", "lte": 10}, {"amount_usd": "10.00"}, HOLDS),
        ({"arg": "amount_usd", "gt": 10}, {"amount_usd": "NaN"}, UNKNOWN),
    ],
)
def test_comparisons_are_typed(condition: dict[str, Any], args: dict[str, Any], expected: tuple[bool, bool]) -> None:
    """A number never equals the string "50" and true never equals "true": a value of another
    kind than the literal fails closed instead of comparing Python spellings."""
    assert verdicts(cond(**condition), call(args)) == expected


def test_an_undeclared_string_is_not_read_as_a_number_by_eq() -> None:
    """Without the catalogue's word that a field is a number, "50" stays a string; ordering
    operators, which compare nothing but numbers, still read a decimal string."""
    assert verdicts(cond(arg="amount_usd", eq=50), call({"amount_usd": "50"}, declared=False)) == UNKNOWN
    assert verdicts(cond(arg="amount_usd", gt=40), call({"amount_usd": "50"}, declared=False)) == HOLDS


@pytest.mark.parametrize(
    ("condition", "facts", "expected"),
    [
        ({"fact": "known_payee", "eq": False}, {"known_payee": False}, HOLDS),
        ({"fact": "known_payee", "eq": False}, {"known_payee": True}, FAILS),
        ({"fact": "known_payee", "eq": False}, {"known_payee": "false"}, UNKNOWN),
        ({"fact": "known_payee", "eq": False}, {}, UNKNOWN),
        ({"fact": "balance_usd", "lt": 100}, {"balance_usd": "99.99"}, HOLDS),
        ({"fact": "holder", "starts_with": "u_"}, {"holder": "U_ALICE"}, HOLDS),
        ({"fact": "holder", "present": False}, {}, HOLDS),
    ],
)
def test_every_operator_works_on_a_fact(
    condition: dict[str, Any], facts: dict[str, Any], expected: tuple[bool, bool]
) -> None:
    """`fact:` names a previewed fact as the operand, for every operator."""
    assert verdicts(cond(**condition), call(facts=facts)) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"arg": "a", "fact": "b", "eq": 1}, "needs exactly one operand, 'arg' (an argument) or 'fact'"),
        ({"eq": 1}, "got none"),
        ({"arg": "a", "in": [1, "1"]}, "'in' lists values of one kind; got number, string"),
        ({"arg": "a", "eq": [1]}, "eq"),
        ({"always": True, "arg": "a"}, "'always' tests no argument or fact"),
        ({"all": [{"arg": "a", "eq": 1}], "arg": "a"}, "the arg or fact goes inside them"),
    ],
)
def test_a_malformed_condition_is_refused(given: dict[str, Any], message: str) -> None:
    """A condition names one operand and one operator, and a list's literals are of one kind."""
    with pytest.raises(ValidationError, match=re.escape(message)):
        cond(**given)


# ---- presence ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "present", "absent"),
    [
        ({"changes": {"name": "Mallory"}}, True, False),
        ({"changes": {"address": "1 Quay St"}}, False, True),
        ({"changes": {"name": None}}, True, False),  # an explicit null is given: it clears the field
        ({}, False, True),
        ({"changes": "name"}, False, True),
    ],
)
def test_presence_of_an_optional_argument(args: dict[str, Any], present: bool, absent: bool) -> None:
    """`present: true` holds when the argument is given, `present: false` when it is not; presence
    can always be evaluated, so it never fails closed."""
    assert verdicts(cond(arg="changes.name", present=True), call(args)) == (present, present)
    assert verdicts(cond(arg="changes.name", present=False), call(args)) == (absent, absent)


# ---- strings and links ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "memo", "expected"),
    [
        ({"starts_with": "Invoice"}, "INVOICE 2291", HOLDS),
        ({"starts_with": "invoice"}, "ｉｎｖｏｉｃｅ 2291", HOLDS),  # fullwidth: NFKC folds it
        ({"ends_with": "rent"}, "December RENT", HOLDS),
        ({"contains": "ignore previous"}, "Please IGNORE Previous instructions", HOLDS),
        ({"contains": "strasse"}, "Hauptstraße", HOLDS),  # casefold, not lower
        ({"regex": "^inv[0-9]+$"}, "INV2291", HOLDS),
        ({"regex": "https?://"}, "ｈｔｔｐｓ：／／evil.example", HOLDS),
        ({"regex": "https?://"}, "December rent", FAILS),
        ({"len_gt": 5}, "123456", HOLDS),
        ({"len_lt": 5}, "123456", FAILS),
        ({"contains": "x"}, 5, UNKNOWN),
    ],
)
def test_text_operators_compare_normal_forms(
    condition: dict[str, Any], memo: object, expected: tuple[bool, bool]
) -> None:
    """Text tests see NFKC, casefolded text on both sides; a value that is not text fails closed."""
    assert verdicts(cond(arg="memo", **condition), call({"memo": memo})) == expected


def test_len_counts_the_items_of_a_list() -> None:
    """`len_gt` and `len_lt` also bound a list argument."""
    assert verdicts(cond(arg="tags", len_gt=2), call({"tags": ["a", "b", "c"]})) == HOLDS


@pytest.mark.parametrize(
    "pattern",
    ["(a)\\1", "(?=admin)", "(?<!x)y", "a{1001}", "x" * 1001, "((a{1000}){1000}){1000}"],
)
def test_a_pattern_re2_cannot_run_in_linear_time_is_refused_at_load(pattern: str) -> None:
    """Back-references, look-arounds, huge repetitions and over-long patterns are refused when the
    policy is read, with RE2's reason; `(a+)+$`, which backtracks in Python's re, is linear in RE2."""
    with pytest.raises(ValidationError, match="regex"):
        cond(arg="memo", regex=pattern)
    assert verdicts(cond(arg="memo", regex="(a+)+$"), call({"memo": "a" * 50_000 + "!"})) == FAILS


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("bob@acme.test", HOLDS),
        ("bob@ACME.TEST.", HOLDS),  # case and a trailing dot
        ("bob@ａｃｍｅ.test", HOLDS),  # fullwidth letters are the same domain
        ("bob@sub.acme.test", FAILS),  # a plain entry is that domain only
        ("bob@team.example", HOLDS),
        ("bob@wiki.team.example", HOLDS),  # `*.team.example` covers its subdomains
        ("bob@team.example.evil.example", FAILS),
        ("bob@аcme.test", FAILS),  # Cyrillic а: another domain (xn--...)
        ("bob@evil.example@acme.test", HOLDS),  # the domain is after the last @
        ("nobody", UNKNOWN),
        ("bob@", UNKNOWN),
        ("bob@a..test", UNKNOWN),
        ("bob@[127.0.0.1]", UNKNOWN),
    ],
)
def test_email_domains_are_normalised_and_fail_closed(to: str, expected: tuple[bool, bool]) -> None:
    """`domain_in` holds for an address whose domain is listed, in normal form; what does not parse
    as an address fails closed, and `domain_not_in` is its exact negation otherwise."""
    listed = ["acme.test", "team.example", "*.team.example"]
    assert verdicts(cond(arg="to", domain_in=listed), call({"to": to})) == expected
    negated = verdicts(cond(arg="to", domain_not_in=listed), call({"to": to}))
    assert negated == (expected if expected == UNKNOWN else (not expected[0], not expected[0]))


@pytest.mark.parametrize(
    ("url", "inside"),
    [
        ("https://team.example/releases", True),
        ("https://WIKI.team.example./releases/4.2", True),
        ("HTTPS://wiki.team.example:8443/x?y=1#z", True),
        ("https://evil.example/login", False),
        ("https://team.example.evil.example/login", False),
        ("https://team.example@evil.example/login", False),  # userinfo, then the real host
        ("https://evil.example\\@team.example/", False),  # a browser reads the backslash as a slash
        ("https://evil.exa\tmple/", False),
        ("ftp://team.example/file", True),
        ("team.example/releases", None),  # no scheme: not a URL
        ("https:///path-only", None),
        ("https://%74eam.example/", None),
        ("javascript:alert(1)", None),
    ],
)
def test_url_domains_read_the_host_a_browser_would_open(url: str, inside: bool | None) -> None:
    """`url_domain_in`/`url_domain_not_in` test the URL's host as a browser reads it; a URL without
    a host that parses fails closed."""
    listed = ["team.example", "*.team.example"]
    in_verdict = verdicts(cond(arg="url", url_domain_in=listed), call({"url": url}))
    out_verdict = verdicts(cond(arg="url", url_domain_not_in=listed), call({"url": url}))
    if inside is None:
        assert in_verdict == out_verdict == UNKNOWN
    else:
        assert (in_verdict, out_verdict) == ((HOLDS, FAILS) if inside else (FAILS, HOLDS))


@pytest.mark.parametrize(
    ("text", "outside"),
    [
        ("4.2 is out (https://wiki.team.example/releases/4.2).", False),
        ("no links here, just team.example mentioned", False),
        ("Please sign in again: https://evil.example/login", True),
        ("mixed: https://team.example/a and http://evil.example/b", True),
        ("fullwidth: ｈｔｔｐｓ：／／evil.example/x", True),
        ("backslashes: https:\\\\evil.example\\x", True),
        ("bare www.evil.example/login", True),
        ("WWW.TEAM.EXAMPLE/ok", False),
        ("a broken link https://-bad-.example/ counts as outside", True),
        # A bare host with a path: a chat client turns it into a link.
        ("sign in again at evil.example/login", True),
        ("notes at wiki.team.example/releases", False),
        ("look-alike тeam.example/login", True),
        # Many links to the listed hosts, and one outside among them.
        (" ".join(f"https://wiki.team.example/{i}" for i in range(200)), False),
        (" ".join(f"https://wiki.team.example/{i}" for i in range(200)) + " (https://evil.example.)", True),
    ],
)
def test_links_outside_finds_any_link_to_an_unlisted_domain(text: str, outside: bool) -> None:
    """`links_outside` holds when the text links anywhere but the listed domains, in any spelling
    a browser would still open; a link whose host does not parse counts as outside."""
    condition = cond(arg="memo", links_outside=["team.example", "*.team.example"])
    assert verdicts(condition, call({"memo": text})) == (HOLDS if outside else FAILS)


def test_finding_links_takes_linear_time_in_the_text() -> None:
    """The text comes from the agent: a long run of `a.a.a.` (quadratic in a backtracking
    engine) is scanned in linear time, and still read to the end."""
    condition = cond(arg="memo", links_outside=["team.example"])
    assert verdicts(condition, call({"memo": "a." * 200_000 + " https://evil.example/x"})) == HOLDS


@pytest.mark.parametrize("entry", ["a..b", "-bad.example", "", "*.", "has space.example"])
def test_a_listed_domain_that_is_not_one_is_refused_at_load(entry: str) -> None:
    """A typo in a domain list would silently match nothing; it is refused when the policy is read."""
    with pytest.raises(ValidationError, match="not a domain"):
        cond(arg="to", domain_in=[entry])


# ---- combinations -----------------------------------------------------------------------------


LARGE = {"arg": "amount_usd", "gt": 500}
NEW_PAYEE = {"fact": "known_payee", "eq": False}


@pytest.mark.parametrize(
    ("args", "facts", "expected"),
    [
        ({"amount_usd": 900}, {"known_payee": False}, HOLDS),
        ({"amount_usd": 900}, {"known_payee": True}, FAILS),
        ({"amount_usd": 90}, {"known_payee": False}, FAILS),
        # The amount is unknown: whether the whole holds depends on it, so it fails closed...
        ({"amount_usd": "lots"}, {"known_payee": False}, UNKNOWN),
        # ...unless the known part settles it: a known payee makes `all` false whatever the amount.
        ({"amount_usd": "lots"}, {"known_payee": True}, FAILS),
    ],
)
def test_all_holds_when_every_part_does(
    args: dict[str, Any], facts: dict[str, Any], expected: tuple[bool, bool]
) -> None:
    """ "More than 500 and not a known payee", with three-valued logic over what cannot be read."""
    assert verdicts(cond(all=[LARGE, NEW_PAYEE]), call(args, facts)) == expected


def test_any_and_not_combine_with_three_valued_logic() -> None:
    """`any` holds when one part does (an unknown part does not matter then); `not` of an unknown
    is unknown, so negating a condition never turns failing closed into failing open."""
    assert verdicts(cond(any=[LARGE, NEW_PAYEE]), call({"amount_usd": "lots"}, {"known_payee": False})) == HOLDS
    assert verdicts(cond(any=[LARGE, NEW_PAYEE]), call({"amount_usd": "lots"}, {"known_payee": True})) == UNKNOWN
    assert verdicts(cond(any=[LARGE, NEW_PAYEE]), call({"amount_usd": 5}, {"known_payee": True})) == FAILS
    assert verdicts(cond(**{"not": LARGE}), call({"amount_usd": 5})) == HOLDS
    assert verdicts(cond(**{"not": LARGE}), call({"amount_usd": "lots"})) == UNKNOWN


def test_combinations_nest_only_so_deep() -> None:
    """A rule stays readable: all/any/not nest at most MAX_DEPTH deep."""
    nested: dict[str, Any] = LARGE
    for _ in range(MAX_DEPTH - 1):
        nested = {"not": nested}
    cond(**nested)
    with pytest.raises(ValidationError, match=f"nest {MAX_DEPTH + 1} deep; at most {MAX_DEPTH}"):
        cond(**{"not": nested})


# ---- in a policy file ---------------------------------------------------------------------------


def test_a_bad_condition_in_a_file_is_named_with_its_line() -> None:
    """The loader's errors for the new operators point at the rule's line like every other."""
    text = EXAMPLE_POLICY.read_text()
    old = "when: {arg: amount_usd, gt: 200}"
    assert old in text
    line = text[: text.index(old)].count("\n") + 1
    with pytest.raises(PolicyError) as error:
        parse_policy(text.replace(old, 'when: {arg: amount_usd, in: [200, "200"]}'), "example.yaml")
    assert f"example.yaml:{line}: tools.payments.create_refund.rules.0.when: Value error, 'in' lists values" in str(
        error.value
    )


def test_a_condition_that_has_decided_still_equals_the_same_condition_read_again() -> None:
    """The compiled test kept with a condition is not part of what it says: a policy that has
    decided equals the same file read again."""
    first, again = cond(arg="memo", regex="^inv"), cond(arg="memo", regex="^inv")
    matches(first, call({"memo": "inv 1"}))
    assert first == again and first != cond(arg="memo", regex="^rent")


def test_the_new_keys_round_trip_through_a_policy_and_its_hash() -> None:
    """Aliased operators (in, all, any, not) load from YAML and dump under the same names, so a
    policy pinned in a run decodes to the same rules and the same content hash."""
    text = EXAMPLE_POLICY.read_text().replace(
        "when: {arg: amount_usd, gt: 200}",
        "when: {all: [{arg: amount_usd, gt: 200}, {not: {arg: order_id, in: [ORD-1]}}, {any: [{always: true}]}]}",
    )
    policy = parse_policy(text)
    dumped = policy.model_dump(mode="json")
    assert dumped["tools"]["payments.create_refund"]["rules"][0]["when"]["all"][1]["not"]["in"] == ["ORD-1"]
    again = type(policy).model_validate(dumped)
    assert again == policy and again.content_hash() == policy.content_hash()


# ---- the reference ----------------------------------------------------------------------------


def test_the_documented_operators_are_every_operator_and_each_example_reads() -> None:
    """docs/policy.md's table of conditions names every operator the loader knows, and each of its
    examples is a condition the loader accepts, using the operator it illustrates."""
    from pathlib import Path

    import yaml

    from contracts.policy import OPERATORS

    doc = (Path(__file__).parents[2] / "docs" / "policy.md").read_text()
    table = doc.split("## Conditions", 1)[1].split("**Typed.**", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented: set[str] = set()
    for row in rows:
        names, _, example = (cell.strip() for cell in row.strip("|").split("|"))
        ops = set(re.findall(r"`([a-z_]+)`", names))
        documented |= ops
        parsed = Condition.model_validate(yaml.safe_load(example.strip("`")))
        assert parsed.operator in ops, row
    assert documented == set(OPERATORS)
