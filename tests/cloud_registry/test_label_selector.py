"""Label selectors: the parser as a table of (text, requirements) and (text, error position),
``matches`` as a table, and a fuzzer holding "parse it or raise LabelSelectorError"."""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_registry.storage.base import LabelRequirement as R
from cloud_registry.storage.label_selector import (
    LabelSelectorError,
    format_label_selector,
    matches,
    parse_label_selector,
    validate_label_key,
    validate_label_value,
    validate_requirements,
)

PARSES: list[tuple[str, tuple[R, ...]]] = [
    ("", ()),
    ("   ", ()),
    ("floor=3", (R("floor", "=", ("3",)),)),
    ("floor==3", (R("floor", "=", ("3",)),)),
    ("floor!=3", (R("floor", "!=", ("3",)),)),
    ("floor", (R("floor", "exists"),)),
    ("!floor", (R("floor", "!exists"),)),
    ("floor=", (R("floor", "=", ("",)),)),
    ("tier in (gold,silver)", (R("tier", "in", ("gold", "silver")),)),
    ("tier notin (gold)", (R("tier", "notin", ("gold",)),)),
    ("tier in(gold, silver ,gold)", (R("tier", "in", ("gold", "silver")),)),
    (
        " a = 1 , b != 2 ,c,! d ",
        (R("a", "=", ("1",)), R("b", "!=", ("2",)), R("c", "exists"), R("d", "!exists")),
    ),
    ("example.com/role=gateway", (R("example.com/role", "=", ("gateway",)),)),
    ("app.kubernetes.io/name=x_y-z.1", (R("app.kubernetes.io/name", "=", ("x_y-z.1",)),)),
    ("building=3号楼", (R("building", "=", ("3号楼",)),)),
    ("in in (in)", (R("in", "in", ("in",)),)),
    ("notin", (R("notin", "exists"),)),
    ("a=1,a=2", (R("a", "=", ("1",)), R("a", "=", ("2",)))),
]


@pytest.mark.parametrize(("text", "expected"), PARSES, ids=[t or "empty" for t, _ in PARSES])
def test_parses(text: str, expected: tuple[R, ...]) -> None:
    assert parse_label_selector(text) == expected
    # the canonical text parses back to the same requirements
    assert parse_label_selector(format_label_selector(expected)) == expected


ERRORS: list[tuple[str, int]] = [
    (",", 0),
    ("a,", 2),
    ("a,,b", 2),
    ("=1", 0),
    ("a=1 b=2", 4),
    ("a b", 2),
    ("a ! b", 2),
    ("a in", 4),
    ("a in gold", 5),
    ("a in (gold", 10),
    ("a in (gold silver)", 11),
    ("a in ()", 6),
    ("a in (x,(y))", 8),
    ("a in (x,)", 8),
    ("a notin (,x)", 9),
    ("a notin (x)y", 11),
    ("a=(1)", 2),
    ("a=b=c", 3),
    ("a=!", 2),
    ("a==b c", 5),
    ("-a=1", 0),
    ("a-=1", 0),
    ("a/b/c=1", 0),
    ("Example.com/x=1", 0),
    ("/x=1", 0),
    ("a" * 64 + "=1", 0),
    ("a=" + "v" * 64, 2),
    ("a=\u0007", 2),
    ("!", 1),
    ("!a=1", 2),
    ("ab inx (1)", 3),
]


@pytest.mark.parametrize(("text", "position"), ERRORS, ids=[t for t, _ in ERRORS])
def test_errors_name_the_position(text: str, position: int) -> None:
    with pytest.raises(LabelSelectorError) as caught:
        parse_label_selector(text)
    assert caught.value.position == position
    assert f"at position {position}" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_non_string_is_refused() -> None:
    with pytest.raises(LabelSelectorError):
        parse_label_selector(None)  # type: ignore[arg-type]


def test_key_and_value_limits() -> None:
    assert validate_label_key("a" * 63) is None
    assert validate_label_key("a" * 64) is not None
    assert validate_label_key("x" * 253 + "/name") is None
    assert validate_label_key("x" * 254 + "/name") is not None
    assert validate_label_key("") is not None
    assert validate_label_key("a_b.c-d") is None
    assert validate_label_key("_a") is not None
    assert validate_label_value("") is None
    assert validate_label_value("v" * 63) is None
    assert validate_label_value("v" * 64) is not None
    assert validate_label_value("a b") is not None
    assert validate_label_value("a,b") is not None
    assert validate_label_value("Ünïcødé") is None


@pytest.mark.parametrize(
    "requirement",
    [
        R("a", "~", ("1",)),
        R("a", "=", ()),
        R("a", "=", ("1", "2")),
        R("a", "exists", ("1",)),
        R("a", "in", ()),
        R("a", "in", ("",)),
        R("bad key", "exists"),
        R("a", "in", ("ok", "not ok")),
    ],
)
def test_validate_requirements(requirement: R) -> None:
    with pytest.raises(LabelSelectorError):
        validate_requirements([requirement])


LABELS = {"floor": "3", "tier": "gold", "empty": ""}
MATCHES: list[tuple[str, bool]] = [
    ("", True),
    ("floor=3", True),
    ("floor=4", False),
    ("floor!=4", True),
    ("floor!=3", False),
    ("missing!=x", True),  # != holds without the label (Kubernetes)
    ("missing=x", False),
    ("floor", True),
    ("missing", False),
    ("!missing", True),
    ("!floor", False),
    ("tier in (gold,silver)", True),
    ("tier in (silver)", False),
    ("missing in (x)", False),
    ("tier notin (silver)", True),
    ("tier notin (gold)", False),
    ("missing notin (x)", True),  # notin holds without the label
    ("empty=", True),
    ("empty", True),
    ("floor=3,tier=gold", True),
    ("floor=3,tier=silver", False),
]


@pytest.mark.parametrize(("text", "expected"), MATCHES, ids=[t or "empty" for t, _ in MATCHES])
def test_matches(text: str, expected: bool) -> None:
    assert matches(LABELS, parse_label_selector(text)) is expected


def test_matches_refuses_an_unknown_operator() -> None:
    with pytest.raises(LabelSelectorError):
        matches(LABELS, [R("floor", "~", ("3",))])


# --------------------------------------------------------------------------- fuzzing

SELECTOR_ALPHABET = string.ascii_letters + string.digits + " ,()=!-_./\t" + "号é\u0000\u00a0"


@given(st.text(alphabet=SELECTOR_ALPHABET, max_size=40))
def test_fuzz_parse_or_raise_the_parser_error(text: str) -> None:
    try:
        requirements = parse_label_selector(text)
    except LabelSelectorError as exc:
        position = exc.position
        requirements = None
    if requirements is None:
        assert 0 <= position <= len(text)
        return
    validate_requirements(requirements)
    assert parse_label_selector(format_label_selector(requirements)) == requirements


@given(st.text(max_size=30))
def test_fuzz_any_text(text: str) -> None:
    with contextlib.suppress(LabelSelectorError):
        parse_label_selector(text)


NAME = st.from_regex(r"[A-Za-z0-9]([-_.A-Za-z0-9]{0,10}[A-Za-z0-9])?", fullmatch=True)
KEY = st.one_of(
    NAME,
    st.builds(
        lambda p, n: f"{p}/{n}",
        st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8}){0,2}", fullmatch=True),
        NAME,
    ),
)
VALUE = st.from_regex(r"[A-Za-z0-9_.\-号]{0,12}", fullmatch=True)


@st.composite
def requirements(draw: st.DrawFn) -> R:
    key = draw(KEY)
    op = draw(st.sampled_from(["=", "!=", "exists", "!exists", "in", "notin"]))
    if op in ("=", "!="):
        return R(key, op, (draw(VALUE),))
    if op in ("in", "notin"):
        values = draw(st.lists(VALUE.filter(bool), min_size=1, max_size=4, unique=True))
        return R(key, op, tuple(values))
    return R(key, op)


@given(st.lists(requirements(), max_size=5))
def test_fuzz_round_trip(reqs: list[R]) -> None:
    text = format_label_selector(reqs)
    assert parse_label_selector(text) == tuple(reqs)


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["1", "2", ""]), max_size=3),
    st.lists(requirements(), max_size=3),
)
def test_fuzz_negations_are_complements(labels: dict[str, str], reqs: list[R]) -> None:
    flip = {
        "=": "!=",
        "!=": "=",
        "exists": "!exists",
        "!exists": "exists",
        "in": "notin",
        "notin": "in",
    }
    for req in reqs:
        assert matches(labels, [req]) is not matches(labels, [R(req.key, flip[req.op], req.values)])
