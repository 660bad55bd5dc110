"""What a command payload must look like, and the errors an operator sees when it does not (pure, no I/O)."""

from __future__ import annotations

import pytest

from trackerdcs.commands import MAX_PAYLOAD_BYTES, Arg, CommandError, CommandSpec, parse_payload, peek_id


def spec(*args: Arg) -> CommandSpec:
    return CommandSpec("set", lambda a: None, args)


def test_empty_payload_means_no_arguments():
    req = parse_payload("refresh", b"")
    assert (req.command, req.id, req.args) == ("refresh", None, {})


def test_id_is_taken_out_of_the_arguments():
    req = parse_payload("set", b'{"id": "abc", "value": 3}')
    assert req.id == "abc"
    assert req.args == {"value": 3}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"hv_on"', "must be a JSON object, got string"),
        (b'{"value": NaN}', "NaN is not valid JSON"),
        (b'{"value": Infinity}', "Infinity is not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"id": [1]}', "'id' must be a string or an integer"),
        (b'{"id": true}', "'id' must be a string or an integer"),
        (b"[" * 100_000 + b"]" * 100_000, "too large"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper"),
    ],
)
def test_malformed_payloads_are_refused_with_a_reason(payload: bytes, message: str):
    with pytest.raises(CommandError, match=message):
        parse_payload("set", payload)


def test_deeply_nested_json_within_the_size_limit_is_refused_not_a_crash():
    depth = MAX_PAYLOAD_BYTES // 2 - 10
    with pytest.raises(CommandError):
        parse_payload("set", b"[" * depth + b"]" * depth)


def test_payload_over_the_size_limit_is_refused():
    with pytest.raises(CommandError, match="payload too large"):
        parse_payload("set", b'{"x":"' + b"a" * MAX_PAYLOAD_BYTES + b'"}')


def test_the_id_of_a_refused_payload_is_still_found_for_the_reply():
    assert peek_id(b'{"id": 7, "value": "x"}') == 7
    assert peek_id(b"{broken") is None


def test_arguments_are_checked_against_type_range_and_choices():
    s = spec(Arg("value", float, minimum=0, maximum=100), Arg("kind", str, choices=("lv", "hv")))
    assert s.validate({"value": 5, "kind": "hv"}) == {"value": 5.0, "kind": "hv"}
    with pytest.raises(CommandError, match="'value' must be a number, got string"):
        s.validate({"value": "5", "kind": "hv"})
    with pytest.raises(CommandError, match="'value' must be a number, got boolean"):
        s.validate({"value": True, "kind": "hv"})
    with pytest.raises(CommandError, match="above the maximum 100"):
        s.validate({"value": 1e308, "kind": "hv"})
    with pytest.raises(CommandError, match="below the minimum 0"):
        s.validate({"value": -1, "kind": "hv"})
    with pytest.raises(CommandError, match="not one of: lv, hv"):
        s.validate({"value": 1, "kind": "xx"})
    with pytest.raises(CommandError, match="missing argument 'kind'"):
        s.validate({"value": 1})
    with pytest.raises(CommandError, match="unknown argument"):
        s.validate({"value": 1, "kind": "lv", "volts": 3})


def test_integers_accept_whole_floats_but_not_fractions():
    s = spec(Arg("n", int))
    assert s.validate({"n": 3.0}) == {"n": 3}
    with pytest.raises(CommandError, match="must be an integer"):
        s.validate({"n": 3.5})


def test_list_arguments_check_each_item():
    s = spec(Arg("modules", list, required=False, item_kind=str))
    assert s.validate({}) == {"modules": None}
    assert s.validate({"modules": ["M1", "M2"]}) == {"modules": ["M1", "M2"]}
    with pytest.raises(CommandError, match="must be a string"):
        s.validate({"modules": ["M1", 2]})
    with pytest.raises(CommandError, match="must be a list"):
        s.validate({"modules": "M1"})
