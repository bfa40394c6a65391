"""The symbolic pickle reader: plain values round-trip, nothing is ever executed, bad input is a FormatError."""

from __future__ import annotations

import math
import os
import pickle
import time
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coral_git.errors import FormatError
from coral_git.formats.pickle_reader import Build, Call, Global, PersistentRef, find_tensors, parse_pickle

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
hashables = st.recursive(scalars, lambda kids: st.tuples(kids, kids) | st.frozensets(kids, max_size=4), max_leaves=8)
plain = st.recursive(
    scalars | st.builds(bytearray, st.binary()),
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.lists(kids, max_size=5).map(tuple)
        | st.dictionaries(hashables, kids, max_size=5)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
    ),
    max_leaves=40,
)


def same(a: Any, b: Any) -> bool:
    """Structural equality that also compares types (1 == 1.0 == True otherwise) and float signs."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


@given(value=plain, protocol=st.integers(0, 5))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_plain_values_round_trip(value: Any, protocol: int) -> None:
    assert same(parse_pickle(pickle.dumps(value, protocol=protocol)), value)


@given(st.binary(max_size=300))
@settings(max_examples=1000, deadline=None)
def test_random_bytes_only_raise_format_error(data: bytes) -> None:
    start = time.process_time()
    try:
        parse_pickle(data)
    except FormatError:
        pass
    assert time.process_time() - start < 1.0  # CPU time: the machine may be busy


@given(value=plain, protocol=st.integers(0, 5), cuts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255))))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_pickles_only_raise_format_error(value: Any, protocol: int, cuts: list[tuple[int, int]]) -> None:
    data = bytearray(pickle.dumps(value, protocol=protocol))
    for pos, byte in cuts:
        data[pos % len(data)] = byte
    try:
        tree = parse_pickle(bytes(data))
    except FormatError:
        return
    try:
        find_tensors(tree)
    except FormatError:
        pass


def test_ordered_dict_becomes_dict_in_order() -> None:
    od = OrderedDict([("z", 1), ("a", 2), ("m", [3])])
    for protocol in range(6):
        out = parse_pickle(pickle.dumps(od, protocol=protocol))
        assert type(out) is dict and list(out.items()) == [("z", 1), ("a", 2), ("m", [3])]


class Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch /tmp/coral-git-pwned",))


def test_globals_and_calls_stay_symbolic() -> None:
    tree = parse_pickle(pickle.dumps({"x": Evil()}, protocol=2))
    call = tree["x"]
    assert isinstance(call, Call)
    assert call.func == Global(os.system.__module__, "system")
    assert call.args == ("touch /tmp/coral-git-pwned",)
    assert not os.path.exists("/tmp/coral-git-pwned")


def test_build_and_persistent_id() -> None:
    data = (
        b"\x80\x02c__main__\nThing\n)\x81}X\x01\x00\x00\x00aK\x01sb"  # Thing.__new__ + BUILD {'a': 1}
        b"(X\x07\x00\x00\x00storageq\x00ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x03tQ"
        b"\x86."
    )
    thing, ref = parse_pickle(data)
    assert isinstance(thing, Call) and thing.func == Global("__main__", "Thing") and thing.state == {"a": 1}
    assert ref == PersistentRef(("storage", Global("torch", "FloatStorage"), "0", "cpu", 3))
    wrapped = parse_pickle(b"\x80\x02}K\x02b.")  # BUILD on a dict wraps it
    assert isinstance(wrapped, Build) and wrapped.obj == {} and wrapped.state == 2


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x02",  # no STOP
        b"\x80\x06N.",  # future protocol
        b"R.",  # stack underflow
        b"e.",  # APPENDS without MARK
        b"\xff.",  # unknown opcode
        b"X\xff\xff\xff\xffabc.",  # BINUNICODE claiming 4 GiB
        b"\x8e\x00\x00\x00\x00\x00\x00\x00\x10abc.",  # BINBYTES8 claiming 2^60 bytes
        b"\x95\x00\x00\x00\x00\x00\x00\x00\x10N.",  # FRAME claiming 2^60 bytes
        b"\x8b\xff\xff\xff\x7f.",  # LONG4 claiming 2 GiB
        b"h\x05.",  # memo miss
        b"](]]d.",  # DICT without its mark items paired... and a list key
        b"}]Ns.",  # unhashable key
        b"\x97.",  # out-of-band buffer
        b"\x82\x01.",  # extension registry
        b"I12x\n.",  # bad INT
        b"S'abc\n.",  # unterminated STRING
    ],
)
def test_malformed_pickles_raise_format_error(data: bytes) -> None:
    with pytest.raises(FormatError):
        parse_pickle(data)


def test_deep_nesting_is_bounded_or_iterative() -> None:
    deep_lists = b"(" * 200_000 + b"l" * 200_000 + b"."
    tree = parse_pickle(deep_lists)
    assert isinstance(tree, list)
    assert find_tensors(tree) == ([], {})
    with pytest.raises(FormatError, match="deeper"):
        parse_pickle(b")" + b"\x85" * 50_000 + b".")  # tuples are hashed recursively: refused
    with pytest.raises(FormatError, match="deeper"):
        parse_pickle(b"(" * 50_000 + b"t" * 50_000 + b".")


def test_self_referencing_list_and_opcode_cap() -> None:
    lst: list[Any] = [1]
    lst.append(lst)
    out = parse_pickle(pickle.dumps(lst, protocol=2))
    assert out[0] == 1 and out[1] is out
    assert find_tensors(out) == ([], {})
    with pytest.raises(FormatError, match="opcodes"):
        parse_pickle(b"N0" * 1000 + b"N.", max_ops=500)
