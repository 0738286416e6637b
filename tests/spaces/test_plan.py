"""Spans and plans: the `s→e` notation, its round trips, every rule, and the execution order."""

from __future__ import annotations

import itertools
import json

import pytest

from toast.spaces import Plan, PlanError, Span, ToastError

L = 12  # blocks of the model most tests plan for


# ---------------------------------------------------------------- notation


def test_parse_papers_notation_sorts_spans_by_start():
    plan = Plan.parse("9→11:linear,3→4:identity", L)
    assert plan.spans == (Span(3, 4, "identity"), Span(9, 11, "linear"))
    assert plan.num_blocks == L


@pytest.mark.parametrize(
    "text",
    [
        "9->11:linear,3->4:identity",  # ASCII arrow
        " 9 → 11 : linear , 3→4:identity ",  # spaces anywhere
        "9→11 linear,3→4 identity",  # kind after a space
        "3→4:identity,9->11",  # default kind, mixed arrows
    ],
)
def test_parse_variants_give_the_same_plan(text):
    assert Plan.parse(text, L) == Plan.of([Span(3, 4, "identity"), Span(9, 11, "linear")], L)


def test_default_kind_is_linear_unless_given():
    assert Plan.parse("3→4", L).spans == (Span(3, 4, "linear"),)
    assert Plan.parse("3→4", L, default_kind="identity").spans == (Span(3, 4, "identity"),)
    # an explicit kind wins over the default
    assert Plan.parse("3→4:ridge", L, default_kind="identity").spans == (Span(3, 4, "ridge"),)
    assert Span.parse("-1->0").kind == "linear"


def test_span_properties_follow_the_papers_convention():
    span = Span(-1, 1, "identity")
    assert list(span.removed) == [0, 1]  # blocks s+1 … e
    assert span.source == 0  # reads h_{s+1}: the embeddings' output
    assert span.target == 2  # approximates h_{e+1}: the output of block 1
    assert str(span) == "-1→1"
    assert span.to_json() == [-1, 1, "identity"]


def test_round_trips():
    plan = Plan.parse("9→11:linear,3→4:identity,-1→0:ridge", L)
    assert str(plan) == "-1→0:ridge, 3→4:identity, 9→11:linear"
    assert Plan.parse(str(plan), L) == plan
    assert plan.to_json() == [[-1, 0, "ridge"], [3, 4, "identity"], [9, 11, "linear"]]
    assert Plan.of(plan.to_json(), L) == plan
    assert Plan.of(json.loads(json.dumps(plan.to_json())), L) == plan
    assert json.loads(plan.dumps()) == {
        "num_blocks": L,
        "spans": [[-1, 0, "ridge"], [3, 4, "identity"], [9, 11, "linear"]],
    }
    assert Plan.loads(plan.dumps()) == plan
    assert Plan.of([str(s) + ":" + s.kind for s in plan.spans], L) == plan


def test_original_model_round_trips():
    plan = Plan.parse("", L)
    assert plan.spans == () and plan.kept == tuple(range(L)) and plan.removed == frozenset()
    assert str(plan) == "original"
    assert Plan.parse(str(plan), L) == plan
    assert Plan.loads(plan.dumps()) == plan
    assert Plan.of([], L) == plan


def test_plan_of_accepts_spans_lists_and_strings():
    expected = Plan.parse("3→4:identity,9→11:linear", L)
    assert Plan.of([Span(9, 11), [3, 4, "identity"]], L) == expected
    assert Plan.of([(9, 11), "3→4:identity"], L) == expected


# ---------------------------------------------------------------- rules


def test_plan_error_is_a_value_error_and_a_toast_error():
    assert issubclass(PlanError, ValueError)
    assert issubclass(PlanError, ToastError)


@pytest.mark.parametrize(
    ("build", "rule"),
    [
        pytest.param(lambda: Plan.parse("2→5,4→6", L), r"2→5 and 4→6 overlap", id="overlap"),
        pytest.param(lambda: Plan.parse("2→5,2→3", L), r"overlap", id="overlap-same-start"),
        pytest.param(lambda: Plan.parse("2→9,4→5", L), r"overlap", id="overlap-nested"),
        pytest.param(lambda: Plan.parse("3→4,3→4", L), r"overlap", id="overlap-duplicate"),
        pytest.param(lambda: Plan.parse("9→12", L), r"ends past the last block \(11\)", id="end-past-last-block"),
        pytest.param(lambda: Plan.parse("-2→3", L), r"start must be >= -1", id="start-below-minus-one"),
        pytest.param(lambda: Span(-5, 0), r"start must be >= -1", id="span-start-below-minus-one"),
        pytest.param(lambda: Plan.parse("5→5", L), r"end must be greater than start", id="end-equals-start"),
        pytest.param(lambda: Plan.parse("5→3", L), r"end must be greater than start", id="end-before-start"),
        pytest.param(
            lambda: Plan.parse("3→4:no_such_kind", L),
            r"unknown translator kind 'no_such_kind' \(known: .*identity.*linear",
            id="unknown-kind",
        ),
        pytest.param(
            lambda: Plan.of([Span(3, 4, "no_such_kind")], L), r"unknown translator kind", id="unknown-kind-of"
        ),
        pytest.param(lambda: Plan.parse("hello", L), r"cannot read span 'hello'", id="garbage-word"),
        pytest.param(lambda: Plan.parse("3→", L), r"cannot read span", id="garbage-no-end"),
        pytest.param(lambda: Plan.parse("3→4:", L), r"cannot read span", id="garbage-empty-kind"),
        pytest.param(lambda: Plan.parse("3-4", L), r"cannot read span", id="garbage-hyphen"),
        pytest.param(lambda: Plan.parse("3→4;5→6", L), r"cannot read span", id="garbage-semicolon"),
        pytest.param(lambda: Plan.parse("1.5→4", L), r"cannot read span", id="garbage-float"),
        pytest.param(lambda: Plan.of([[3]], L), r"expected \[start, end, kind\]", id="short-list"),
        pytest.param(lambda: Plan.parse("", 0), r"num_blocks must be >= 1", id="no-blocks"),
        pytest.param(lambda: Span(1.0, 3), r"must be integers", id="non-integer"),
        pytest.param(lambda: Plan.loads("not json"), r"cannot read plan", id="loads-not-json"),
        pytest.param(lambda: Plan.loads('{"spans": [[3, 4, "linear"]]}'), r"cannot read plan", id="loads-missing-key"),
        pytest.param(
            lambda: Plan.loads('{"num_blocks": 12, "spans": [[3, 4, "linear"], [4, 13, "linear"]]}'),
            r"ends past the last block",
            id="loads-invalid-plan",
        ),
    ],
)
def test_every_broken_rule_raises_plan_error_naming_it(build, rule):
    with pytest.raises(PlanError, match=rule) as info:
        build()
    assert isinstance(info.value, ValueError)


def test_every_plan_level_problem_is_listed_at_once():
    with pytest.raises(PlanError) as info:
        Plan.parse("2→5:no_such_kind,4→12", L)
    message = str(info.value)
    assert "unknown translator kind" in message
    assert "ends past the last block" in message
    assert "overlap" in message


# ---------------------------------------------------------------- chained spans, removed and kept blocks


def test_chained_spans_are_allowed():
    plan = Plan.parse("0→2,2→4:identity", 6)
    assert plan.spans == (Span(0, 2), Span(2, 4, "identity"))
    assert plan.removed == frozenset({1, 2, 3, 4})
    assert plan.kept == (0, 5)


def test_removed_and_kept():
    plan = Plan.parse("-1→1:identity,3→5,9→11", L)
    assert plan.removed == frozenset({0, 1, 4, 5, 10, 11})
    assert plan.kept == (2, 3, 6, 7, 8, 9)


# ---------------------------------------------------------------- execution order


def test_steps_with_embedding_span_chain_and_last_block():
    plan = Plan.parse("5→7,-1→1:identity,1→3:ridge", 8)
    assert plan.steps() == [
        ("span", Span(-1, 1, "identity")),  # h_0 → h_2, blocks 0 and 1 skipped
        ("span", Span(1, 3, "ridge")),  # reads the previous translator's output
        ("block", 4),
        ("block", 5),
        ("span", Span(5, 7, "linear")),  # ends at the last block: nothing runs after it
    ]


def test_steps_with_a_gap_and_for_the_original_model():
    assert Plan.parse("2→4", 6).steps() == [
        ("block", 0),
        ("block", 1),
        ("block", 2),
        ("span", Span(2, 4)),
        ("block", 5),
    ]
    assert Plan.parse("", 3).steps() == [("block", 0), ("block", 1), ("block", 2)]
    assert Plan.parse("-1→2", 3).steps() == [("span", Span(-1, 2))]


def _all_valid_plans(num_blocks: int):
    spans = [Span(s, e) for s in range(-1, num_blocks - 1) for e in range(s + 1, num_blocks)]
    for r in range(num_blocks + 1):
        for combo in itertools.combinations(spans, r):
            try:
                yield Plan.of(combo, num_blocks)
            except PlanError:
                continue


def test_steps_walk_every_hidden_state_once_for_every_small_plan():
    """Simulate the hidden-state index: each step must read the state the previous one wrote."""
    count = 0
    for plan in _all_valid_plans(5):
        state = 0  # h_0, the embeddings' output
        blocks, spans = [], []
        for what, item in plan.steps():
            if what == "block":
                assert state == item, (str(plan), plan.steps())  # block b reads h_b
                state = item + 1
                blocks.append(item)
            else:
                assert what == "span" and state == item.source, (str(plan), plan.steps())
                state = item.target
                spans.append(item)
        assert state == plan.num_blocks  # the last state h_L is produced
        assert tuple(blocks) == plan.kept
        assert tuple(spans) == plan.spans
        count += 1
    assert count > 30  # the enumeration really produced plans (chained ones included)
