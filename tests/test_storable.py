"""What makes a message fit to store: the quick check agrees with the transformation.

``storable_with_data`` first asks ``_unchanged`` whether anything in a message's
dict needs changing, and walks it with ``storable_value`` only when something
does: the two must agree on every JSON-like value.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, message_to_dict

from chatwright.history import MAX_DEPTH, _unchanged, storable_value, storable_with_data

# Text that is storable and text that is not (NUL, lone surrogates).
texts = st.one_of(
    st.text(max_size=8),
    st.text(alphabet=st.sampled_from(["a", "\x00", "\ud800", "\udfff", "é"]), max_size=6),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(texts, inner, max_size=4),
    ),
    max_leaves=20,
)


@given(values)
def test_the_quick_check_agrees_with_the_transformation(value: Any) -> None:
    assert _unchanged(value) == (storable_value(value) is value)


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": [value]}
    return value


def test_values_nested_past_the_limit_are_changed_and_within_it_are_not() -> None:
    for depth in (MAX_DEPTH // 2 - 1, MAX_DEPTH // 2, MAX_DEPTH // 2 + 1):
        value = nested(depth, "x")
        assert _unchanged(value) == (storable_value(value) is value)
    assert _unchanged(nested(MAX_DEPTH // 2 - 1, "x"))
    assert not _unchanged(nested(MAX_DEPTH, "x"))


def test_subclasses_and_objects_are_decided_as_the_transformation_decides() -> None:
    class Text(str):
        pass

    for value in (
        OrderedDict(a="\x00"),
        OrderedDict(a="b"),
        Text("fine"),
        Text("nul\x00"),
        object(),
        [math.inf],
        {"n": math.nan},
        (1, "\ud800"),
    ):
        assert _unchanged(value) == (storable_value(value) is value), value


def test_a_message_needing_no_change_is_kept_with_its_dump_and_one_needing_one_is_made_anew() -> (
    None
):
    fine = AIMessage(content="ok", tool_calls=[{"id": "c", "name": "t", "args": {"x": 1.5}}])
    made, data = storable_with_data(fine)
    assert made is fine and data == message_to_dict(fine)
    bad = HumanMessage(content="nul\x00 and \ud800", additional_kwargs={"n": math.nan})
    made, data = storable_with_data(bad)
    assert made is not bad
    assert made.content == "nul\ufffd and \ufffd"
    assert made.additional_kwargs == {"n": "nan"}
    assert data == message_to_dict(made)
