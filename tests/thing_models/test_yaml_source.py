"""Tests of the safe YAML reader: plain data, positions, and refusal of hostile input."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from thing_models.errors import Diagnostic, HostileInputError, ModelLoadError
from thing_models.yaml_format import load_model_file, load_model_text
from thing_models.yaml_source import Limits, SourceMap, format_path, parse_yaml

#: Hostile input must be refused in well under this many seconds (a bound against blow-up).
FAST = 1.0


def refused(
    call: Callable[[], Any], error: type[ModelLoadError] = ModelLoadError
) -> tuple[ModelLoadError, float]:
    """Run ``call``, which must raise ``error``; return the error and the seconds it took."""
    start = time.perf_counter()
    with pytest.raises(error) as info:
        call()
    return info.value, time.perf_counter() - start


def only(error: ModelLoadError) -> Diagnostic:
    assert len(error.diagnostics) == 1, error.diagnostics
    return error.diagnostics[0]


def where(diag: Diagnostic) -> tuple[int, int]:
    return diag.location.line, diag.location.column


# --------------------------------------------------------------------------- plain data


def test_parses_plain_data_with_yaml_1_2_scalars() -> None:
    data, _ = parse_yaml(
        "a: on\nb: yes\nc: no\nd: off\ne: y\nf: true\ng: False\nh: ~\ni: 0x1F\nj: 1.5\n"
        "k: 2020-01-01\nl: 2001-12-14t21:59:43.10-05:00\nm: '1'\n"
    )
    assert data == {
        "a": "on",
        "b": "yes",
        "c": "no",
        "d": "off",
        "e": "y",
        "f": True,
        "g": False,
        "h": None,
        "i": 31,
        "j": 1.5,
        "k": "2020-01-01",
        "l": "2001-12-14t21:59:43.10-05:00",
        "m": "1",
    }


def test_loaded_model_keeps_yes_on_and_dates_as_strings() -> None:
    model = load_model_text(
        'model: a/b\nversion: "1.0.0"\ntitle: on\nvendor: yes\ndescription: 2024-05-01\n'
        "extensions: {built: 2024-05-01T10:00:00Z, flag: off, real: true}\n"
    )
    assert (model.title, model.vendor, model.description) == ("on", "yes", "2024-05-01")
    assert model.extensions == {"built": "2024-05-01T10:00:00Z", "flag": "off", "real": True}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_document_is_none(text: str) -> None:
    assert parse_yaml(text)[0] is None


def test_source_map_records_value_and_key_positions() -> None:
    data, smap = parse_yaml(
        "model: a/b\nproperties:\n  - id: x\n    type: int32\n  - {id: y, type: bool}\n",
        "m.yaml",
    )
    assert data["properties"][1] == {"id": "y", "type": "bool"}
    assert smap.values[("model",)] == (1, 8)
    assert smap.keys[("model",)] == (1, 1)
    assert smap.values[("properties", 0, "type")] == (4, 11)
    assert smap.keys[("properties", 0, "type")] == (4, 5)
    assert smap.values[("properties", 1, "id")] == (5, 10)
    loc = smap.locate(("properties", 1, "type"))
    assert (str(loc), loc.line, loc.column) == ("m.yaml:5:19", 5, 19)
    # A path that is not in the document falls back to its nearest ancestor.
    assert str(smap.locate(("properties", 1, "min"))) == "m.yaml:5:5"
    assert str(smap.locate(("nothing", "here"))) == "m.yaml:1:1"
    assert str(smap.locate(("properties", 0, "type"), key=True)) == "m.yaml:4:5"


def test_format_path() -> None:
    assert format_path(()) == ""
    assert format_path(("properties", 2, "max")) == "properties[2].max"
    assert format_path((0, "a", 1, 2)) == "[0].a[1][2]"
    assert SourceMap("f").locate(()).line == 1


def test_aliases_and_merge_keys_expand() -> None:
    data, _ = parse_yaml(
        "base: &b {type: float, unit: V}\n"
        "extra: &e {min: 0}\n"
        "p: {<<: *b, id: v}\n"
        "q: {<<: [*b, *e], unit: mV}\n"
        "r: *b\n"
    )
    assert data["p"] == {"type": "float", "unit": "V", "id": "v"}
    assert data["q"] == {"type": "float", "unit": "mV", "min": 0}
    assert data["r"] == {"type": "float", "unit": "V"}


def test_merge_of_a_scalar_is_an_error() -> None:
    error, _ = refused(lambda: parse_yaml("a: 1\nb: {<<: 5}\n"))
    diag = only(error)
    assert where(diag) == (2, 9)
    assert "merge key (<<) needs a mapping" in diag.message


def test_utf8_bom_is_accepted() -> None:
    data, smap = parse_yaml(b"\xef\xbb\xbfmodel: a/b\nversion: '1.0.0'\n")
    assert data == {"model": "a/b", "version": "1.0.0"}
    assert smap.values[("version",)] == (2, 10)
    model = load_model_text(b"\xef\xbb\xbfmodel: a/b\nversion: '1.0.0'\n")
    assert model.name == "a/b"


def test_str_with_bom_is_accepted() -> None:
    assert parse_yaml("\ufeffa: 1")[0] == {"a": 1}


# --------------------------------------------------------------------------- document errors


def test_duplicate_keys_are_errors_all_reported() -> None:
    error, seconds = refused(lambda: parse_yaml("a: 1\nb: 2\na: 3\nc:\n  x: 1\n  x: 2\n", "d.yaml"))
    assert [where(d) for d in error.diagnostics] == [(3, 1), (6, 3)]
    assert all("duplicate key" in d.message for d in error.diagnostics)
    assert "d.yaml:3:1" in str(error)
    assert "'a'" in str(error.diagnostics[0])
    assert seconds < FAST


def test_duplicate_key_in_flow_mapping() -> None:
    diag = only(refused(lambda: parse_yaml("{id: a, type: int32, id: b}"))[0])
    assert where(diag) == (1, 22)
    assert diag.message == "duplicate key 'id'"


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("? [a, b]\n: 1\n", (1, 3)),
        ("{[a]: 1}", (1, 2)),
        ("? {a: 1}\n: 1\n", (1, 3)),
        ("~: 1\n", (1, 1)),
    ],
)
def test_non_scalar_and_null_keys_are_errors(text: str, position: tuple[int, int]) -> None:
    error, seconds = refused(lambda: parse_yaml(text))
    assert seconds < FAST
    diag = only(error)
    assert where(diag) == position
    assert "mapping key must be a plain scalar" in diag.message
    assert diag.expected == "a string or number key"


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("a: [1, 2\n", (2, 1), "expected ',' or ']'"),
        ("a: b: c\n", (1, 5), "mapping values are not allowed here"),
        ("a:\n  - 1\n  b: 2\n", (3, 3), "expected <block end>"),
        ("a: 'unterminated\n", (2, 1), "found unexpected end of stream"),
        ("a: *nowhere\n", (1, 4), "found undefined alias"),
        ("a: 1\n---\nb: 2\n", (2, 1), "expected a single document"),
        ("a: &x 1\nb: &x 2\n", (2, 4), "found duplicate anchor 'x'"),
    ],
)
def test_syntax_errors_name_their_position(
    text: str, position: tuple[int, int], fragment: str
) -> None:
    diag = only(refused(lambda: parse_yaml(text, "s.yaml"))[0])
    assert where(diag) == position
    assert diag.message.startswith("YAML syntax:")
    assert fragment in diag.message
    assert str(diag).startswith(f"s.yaml:{position[0]}:{position[1]}: error:")


@pytest.mark.parametrize(
    ("text", "position", "tag"),
    [
        ("a: !!python/object/apply:os.system ['ls']\n", (1, 4), "python/object/apply:os.system"),
        ("!!python/object:os.foo {a: 1}\n", (1, 1), "python/object:os.foo"),
        ("a: !!python/name:os.system\n", (1, 4), "python/name:os.system"),
        ("a:\n  - !!python/tuple [1, 2]\n", (2, 5), "python/tuple"),
        ("a: !!binary aGVsbG8=\n", (1, 4), "binary"),
        ("a: !!set {x, y}\n", (1, 4), "set"),
        ("a: !!omap [{x: 1}]\n", (1, 4), "omap"),
        ("a: !!timestamp 2020-01-01\n", (1, 4), "timestamp"),
        ("a: !custom x\n", (1, 4), "!custom"),
    ],
)
def test_non_plain_tags_are_refused(text: str, position: tuple[int, int], tag: str) -> None:
    error, seconds = refused(lambda: parse_yaml(text))
    diag = only(error)
    assert where(diag) == position
    assert "unsupported YAML tag" in diag.message
    assert tag in diag.message
    assert seconds < FAST


def test_python_tag_as_key_is_refused() -> None:
    error, _ = refused(lambda: parse_yaml("? !!python/object:os.x {}\n: 1\n"))
    assert any("unsupported YAML tag" in d.message for d in error.diagnostics)


def test_standard_explicit_tags_are_accepted() -> None:
    data, _ = parse_yaml("a: !!str 1\nb: !!int '7'\nc: !!float 1\nd: !!map {x: !!seq [1]}\n")
    assert data == {"a": "1", "b": 7, "c": 1.0, "d": {"x": [1]}}


@pytest.mark.parametrize(
    ("text", "position"),
    [("a: \x00\n", (1, 4)), ("x: 1\nb: ok\x07\n", (2, 6)), ("\x1b", (1, 1))],
)
def test_control_characters_are_refused_with_position(text: str, position: tuple[int, int]) -> None:
    for data in (text, text.encode()):
        diag = only(refused(functools.partial(parse_yaml, data))[0])
        assert where(diag) == position
        assert "is not allowed in YAML" in diag.message
        assert diag.message.startswith("character U+00")


# --------------------------------------------------------------------------- hostile input


def billion_laughs(levels: int = 9, fan: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_quickly() -> None:
    text = billion_laughs()
    assert len(text) < 1000
    error, seconds = refused(lambda: load_model_text(text), HostileInputError)
    diag = only(error)
    assert "more than 200000 nodes after alias expansion" in diag.message
    assert diag.expected == "a document without alias bombs"
    assert where(diag) == (1, 66)  # where expansion passed the limit: inside a0
    assert seconds < FAST


def test_merge_key_bomb_is_refused_quickly() -> None:
    # Each level merges the previous one ten times: 10**12 merged pairs if expanded naively.
    lines = ["m0: &m0 {a: 1, b: 2}"]
    for i in range(1, 13):
        lines.append(f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 10) + "]}")
    error, seconds = refused(lambda: parse_yaml("\n".join(lines)), HostileInputError)
    assert "nodes after merge expansion" in only(error).message
    assert seconds < FAST


def test_node_limit_is_configurable() -> None:
    text = billion_laughs(levels=2, fan=3)  # 9 + 3*9 + 9*9 leaves and lists: ~130 nodes
    assert parse_yaml(text)[0]["a2"][2][2] == ["lol"] * 9
    error, _ = refused(lambda: parse_yaml(text, limits=Limits(max_nodes=50)), HostileInputError)
    assert "more than 50 nodes" in only(error).message


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("&a [*a]", (1, 1)),
        ("a: &a {b: *a}", (1, 4)),
        ("a: &a\n  - x\n  - *a\n", (2, 3)),
    ],
)
def test_recursive_alias_is_refused(text: str, position: tuple[int, int]) -> None:
    error, seconds = refused(lambda: parse_yaml(text), HostileInputError)
    diag = only(error)
    assert "recursive alias" in diag.message
    assert seconds < FAST
    assert diag.location.line >= position[0]


@pytest.mark.parametrize("text", ["&a {<<: *a}", "a: &a {x: 1, <<: *a}", "&a {<<: [*a, *a]}"])
def test_recursive_merge_is_refused(text: str) -> None:
    error, seconds = refused(lambda: parse_yaml(text), HostileInputError)
    diag = only(error)
    assert "recursive merge" in diag.message
    assert seconds < FAST


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("[" * 10_000 + "]" * 10_000, (1, 65)),
        ("{" * 10_000 + "}" * 10_000, (1, 65)),
        ("{a: " * 10_000 + "1" + "}" * 10_000, (1, 4 * 64 + 1)),
        ("[a: " * 10_000 + "1" + "]" * 10_000, (1, 4 * 64 + 1)),
        ("- " * 10_000 + "x\n", (1, 2 * 64 + 1)),
        # The mapping at line 64 is the 64th level; its key would be the 65th.
        ("a:\n" + "".join(" " * i + "a:\n" for i in range(1, 100)), (64, 64)),
    ],
    ids=["brackets", "braces", "flow-mappings", "flow-pairs", "block-sequences", "block-maps"],
)
def test_deep_nesting_is_refused_quickly(text: str, position: tuple[int, int]) -> None:
    error, seconds = refused(lambda: load_model_text(text), HostileInputError)
    diag = only(error)
    assert where(diag) == position
    assert diag.message == "nesting deeper than 64 levels"
    assert diag.expected == "at most 64 levels"
    assert seconds < FAST


def test_nesting_at_the_limit_is_accepted() -> None:
    data, _ = parse_yaml("[" * 64 + "]" * 64)
    depth = 0
    while data:
        data = data[0]
        depth += 1
    assert depth == 63  # 64 lists: the innermost is empty
    assert parse_yaml("[" * 4 + "]" * 4, limits=Limits(max_depth=4))[0] == [[[[]]]]
    refused(lambda: parse_yaml("[" * 5 + "]" * 5, limits=Limits(max_depth=4)), HostileInputError)


def test_huge_file_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as out:
        out.write(b"model: a/b\nversion: '1.0.0'\ndescription: '")
        out.write(b"x" * (3 * 1024 * 1024))
        out.write(b"'\n")
    size = path.stat().st_size

    def no_read(self: Path) -> bytes:
        raise AssertionError("a huge file must be refused before it is read")

    monkeypatch.setattr(Path, "read_bytes", no_read)
    error, seconds = refused(lambda: load_model_file(path), HostileInputError)
    diag = only(error)
    assert diag.message == f"document is {size} bytes, over the limit of 2097152 bytes"
    assert diag.location.file == str(path)
    assert str(path) in str(error)
    assert seconds < FAST


def test_huge_text_is_refused_before_parsing() -> None:
    text = "a: [" + "1, " * (1024 * 1024) + "1]"
    error, seconds = refused(lambda: load_model_text(text), HostileInputError)
    assert "over the limit of 2097152 bytes" in only(error).message
    assert seconds < FAST


def test_size_limit_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("model: a/b\nversion: '1.0.0'\n")
    assert load_model_file(path).name == "a/b"
    error, _ = refused(lambda: load_model_file(path, Limits(max_bytes=10)), HostileInputError)
    assert "over the limit of 10 bytes" in only(error).message


def test_missing_file_is_a_load_error(tmp_path: Path) -> None:
    error, _ = refused(lambda: load_model_file(tmp_path / "absent.yaml"))
    assert not isinstance(error, HostileInputError)
    diag = only(error)
    assert "cannot read file" in diag.message
    assert diag.location.file.endswith("absent.yaml")


@pytest.mark.parametrize(
    ("data", "position", "byte"),
    [
        (b"model: x\nfoo: ab\xff\n", (2, 8), "0xff"),
        (b"\xc3\x28", (1, 1), "0xc3"),
        (b"a: 1\nb: 2\nc: \xe6\xbc\xa2\xe5\xad\x97\x80\n", (3, 6), "0x80"),
        (b"a: \xed\xa0\x80\n", (1, 4), "0xed"),  # an encoded surrogate
        (b"\xff\xfea\x00:\x00", (1, 1), "0xff"),  # UTF-16
    ],
)
def test_invalid_utf8_is_refused_with_position(
    data: bytes, position: tuple[int, int], byte: str
) -> None:
    error, seconds = refused(lambda: load_model_text(data, "bad.yaml"), HostileInputError)
    diag = only(error)
    assert where(diag) == position  # columns count characters, not bytes
    assert diag.message == f"byte {byte} is not valid UTF-8"
    assert diag.expected == "UTF-8 text"
    assert str(diag).startswith(f"bad.yaml:{position[0]}:{position[1]}: error:")
    assert seconds < FAST


def test_invalid_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: a/b\ntitle: Zähler\n".encode("latin-1"))
    diag = only(refused(lambda: load_model_file(path), HostileInputError)[0])
    assert where(diag) == (2, 9)
    assert diag.location.file == str(path)


def test_hostile_input_error_is_a_model_load_error() -> None:
    assert issubclass(HostileInputError, ModelLoadError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 010", 10),  # YAML 1.2: decimal, not octal
        ("a: 0o17", 15),
        ("a: 0x1F", 31),
        ("a: 10:30", "10:30"),  # no sexagesimal integers
        ("a: 1e-3", 0.001),  # a float, not a string
        ("a: 12e3", 12000.0),
        ("a: .5", 0.5),
        ("a: 1_000", "1_000"),  # no underscores in numbers
        ("a: +5", 5),
    ],
)
def test_yaml_12_numbers(text: str, expected: object) -> None:
    value = parse_yaml(text, "n.yaml")[0]["a"]
    assert value == expected
    assert type(value) is type(expected)


def test_explicit_number_tags_with_garbage_are_located_errors() -> None:
    with pytest.raises(ModelLoadError, match=r"n\.yaml:1:4: .*'abc' is not an integer"):
        parse_yaml("a: !!int abc", "n.yaml")
