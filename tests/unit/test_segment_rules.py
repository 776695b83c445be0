"""The segment rule language: parsing, error reports, Python semantics, and agreement of
the SQL compiler with the Python predicate (property-tested here on SQLite; the same
property runs on PostgreSQL in tests/integration/test_segment_rules_postgres.py)."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pydantic
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from projections.segment_rules import cutoff, fact_columns, predicate, to_sql
from schemas import Channel, EventValidationError, SegmentDefined, Source, new_event, parse_event
from schemas.rules import (
    FIELDS,
    MAX_CONDITIONS,
    MAX_DEPTH,
    OP_ALIASES,
    OPS_BY_TYPE,
    All,
    AnyOf,
    Condition,
    FieldType,
    Not,
    Op,
    Rule,
    RuleError,
    RuleProblem,
    parse_rule,
    rule_fields,
    rule_to_json,
)

NOW = datetime(2024, 6, 15, 12, 0, 0, 123456, tzinfo=UTC)
PLUS_2 = timezone(timedelta(hours=2))
T = datetime(2024, 5, 1, tzinfo=UTC)


def leaf(name: Any, op: Any, *value: Any) -> dict[str, Any]:
    """A condition's JSON; no ``value`` key when none is given."""
    return {"field": name, "op": op, **({"value": value[0]} if value else {})}


def problems(rule: object) -> list[str]:
    with pytest.raises(RuleError) as info:
        parse_rule(rule)
    return [str(problem) for problem in info.value.problems]


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (leaf("order_count", "eq", 3), Condition("order_count", Op.EQ, 3)),
        (leaf("country", "ne", "FR"), Condition("country", Op.NE, "FR")),
        (
            leaf("email_marketing_consent", "eq", True),
            Condition("email_marketing_consent", Op.EQ, True),
        ),
        (leaf("revenue", "lt", 100), Condition("revenue", Op.LT, 100.0)),
        (leaf("clv", "le", 2.5), Condition("clv", Op.LE, 2.5)),
        (leaf("nps", "gt", -1), Condition("nps", Op.GT, -1)),
        (leaf("last_seen", "ge", "2024-05-01T02:00:00+02:00"), Condition("last_seen", Op.GE, T)),
        (leaf("nps", "between", [0, 6]), Condition("nps", Op.BETWEEN, (0, 6))),
        (leaf("churn_risk", "between", [0, 0.5]), Condition("churn_risk", Op.BETWEEN, (0.0, 0.5))),
        (
            leaf("first_seen", "between", ["2024-05-01T00:00:00Z", "2024-05-01T00:00:00Z"]),
            Condition("first_seen", Op.BETWEEN, (T, T)),
        ),
        (
            leaf("value_tier", "in", ["gold", "silver"]),
            Condition("value_tier", Op.IN, ("gold", "silver")),
        ),
        (leaf("p_alive", "not_in", [1, 0.5]), Condition("p_alive", Op.NOT_IN, (1.0, 0.5))),
        (leaf("recency_score", "in", [5]), Condition("recency_score", Op.IN, (5,))),
        (
            leaf("last_email_response_at", "within_days", 90),
            Condition("last_email_response_at", Op.WITHIN_DAYS, 90),
        ),
        (
            leaf("last_order_at", "older_than_days", 0),
            Condition("last_order_at", Op.OLDER_THAN_DAYS, 0),
        ),
        (leaf("gender", "is_null"), Condition("gender", Op.IS_NULL)),
        (
            leaf("sms_marketing_consent", "not_null"),
            Condition("sms_marketing_consent", Op.NOT_NULL),
        ),
        (
            {"all": [leaf("nps", "is_null"), {"any": [{"not": leaf("nps", "eq", 1)}]}]},
            All((Condition("nps", Op.IS_NULL), AnyOf((Not(Condition("nps", Op.EQ, 1)),)))),
        ),
    ],
)
def test_every_operator_parses_to_typed_values(data: dict[str, Any], expected: Rule) -> None:
    parsed = parse_rule(data)
    assert parsed == expected
    assert [type(v) for v in _values(parsed)] == [type(v) for v in _values(expected)]


def _values(rule: Rule) -> list[Any]:
    match rule:
        case Condition(value=tuple(items)):
            return list(items)
        case Condition(value=value):
            return [value]
        case All(rules) | AnyOf(rules):
            return [v for child in rules for v in _values(child)]
        case Not(child):
            return _values(child)
    raise AssertionError(rule)


@pytest.mark.parametrize(("alias", "op"), sorted(OP_ALIASES.items()))
def test_aliases_become_canonical_operators(alias: str, op: Op) -> None:
    parsed = parse_rule(leaf("order_count", alias, 2))
    assert parsed == Condition("order_count", op, 2)
    assert rule_to_json(parsed)["op"] == op.value


def test_timestamps_become_aware_utc_and_canonical_json_uses_z() -> None:
    parsed = parse_rule(leaf("assessed_at", "<", "2024-05-01T14:30:00.5+02:00"))
    assert isinstance(parsed, Condition)
    assert parsed.value == datetime(2024, 5, 1, 12, 30, 0, 500000, tzinfo=UTC)
    assert isinstance(parsed.value, datetime) and parsed.value.tzinfo is UTC
    assert rule_to_json(parsed) == leaf("assessed_at", "lt", "2024-05-01T12:30:00.500000Z")


def test_canonical_json_of_a_compound_rule() -> None:
    data = {
        "all": [
            {"any": [leaf("clv", ">=", 500), leaf("value_tier", "==", "gold")]},
            {"not": leaf("email_marketing_consent", "=", False)},
            leaf("last_response_at", "within_days", 90),
            leaf("gender", "not_null"),
        ]
    }
    assert rule_to_json(parse_rule(data)) == {
        "all": [
            {"any": [leaf("clv", "ge", 500.0), leaf("value_tier", "eq", "gold")]},
            {"not": leaf("email_marketing_consent", "eq", False)},
            leaf("last_response_at", "within_days", 90),
            leaf("gender", "not_null"),
        ]
    }
    assert rule_fields(parse_rule(data)) == {
        "clv",
        "value_tier",
        "email_marketing_consent",
        "last_response_at",
        "gender",
    }


def test_every_field_type_allows_the_documented_operators() -> None:
    assert set(OPS_BY_TYPE[FieldType.TEXT]) == {
        Op.EQ,
        Op.NE,
        Op.IN,
        Op.NOT_IN,
        Op.IS_NULL,
        Op.NOT_NULL,
    }
    assert set(OPS_BY_TYPE[FieldType.BOOLEAN]) == {Op.EQ, Op.NE, Op.IS_NULL, Op.NOT_NULL}
    assert Op.WITHIN_DAYS in OPS_BY_TYPE[FieldType.TIMESTAMP]
    assert Op.IN not in OPS_BY_TYPE[FieldType.TIMESTAMP]
    assert OPS_BY_TYPE[FieldType.INTEGER] == OPS_BY_TYPE[FieldType.NUMBER]


def test_ast_nodes_are_immutable_and_combinators_non_empty() -> None:
    condition = Condition("nps", Op.EQ, 1)
    with pytest.raises(AttributeError):
        condition.value = 2  # type: ignore[misc]
    with pytest.raises(ValueError):
        All(())
    with pytest.raises(ValueError):
        AnyOf(())


# --- errors ----------------------------------------------------------------------------

TEXT_OPS = "eq, ne, in, not_in, is_null, not_null"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {"all": [leaf("nps", "eq", 1), leaf("revnue", "gt", 10)]},
            ["all.1.field: unknown field 'revnue' (did you mean 'revenue'?)"],
        ),
        (
            {"all": [leaf("rfm_segment", "lt", "b")]},
            [f"all.0.op: 'lt' does not apply to text field 'rfm_segment'; use {TEXT_OPS}"],
        ),
        (
            {"not": leaf("clv", "eq", "12")},
            ["not.value: expected a number for field 'clv', got string"],
        ),
        (
            leaf("order_count", "gt", True),
            ["value: expected an integer for field 'order_count', got boolean"],
        ),
        (
            leaf("order_count", "gt", 2.0),
            ["value: expected an integer for field 'order_count', got number"],
        ),
        (
            leaf("order_count", "eq", 2**63),
            ["value: expected an integer that fits in 64 bits (signed) for field 'order_count'"],
        ),
        (leaf("clv", "eq", True), ["value: expected a number for field 'clv', got boolean"]),
        (leaf("clv", "eq", float("nan")), ["value: expected a finite number for field 'clv'"]),
        (leaf("country", "eq", 3), ["value: expected a string for field 'country', got integer"]),
        (
            leaf("email_marketing_consent", "eq", "yes"),
            ["value: expected true or false for field 'email_marketing_consent', got string"],
        ),
        (
            leaf("email_marketing_consent", "gt", True),
            [
                "op: 'gt' does not apply to boolean field 'email_marketing_consent'; "
                "use eq, ne, is_null, not_null"
            ],
        ),
        (
            leaf("last_seen", "gt", "2024-05-01T12:00:00"),
            [
                "value: timestamp for field 'last_seen' has no timezone; "
                "add 'Z' or an offset such as '+02:00'"
            ],
        ),
        (
            leaf("last_seen", "gt", "yesterday"),
            [
                "value: expected a timestamp (ISO-8601 with a timezone, e.g. "
                "'2024-05-01T12:00:00Z') for field 'last_seen'"
            ],
        ),
        (
            leaf("last_seen", "gt", 1714564800),
            [
                "value: expected a timestamp string (ISO-8601 with a timezone, e.g. "
                "'2024-05-01T12:00:00Z') for field 'last_seen', got integer"
            ],
        ),
        (
            leaf("last_seen", "in", ["2024-05-01T12:00:00Z"]),
            [
                "op: 'in' does not apply to timestamp field 'last_seen'; use eq, ne, lt, le, "
                "gt, ge, between, within_days, older_than_days, is_null, not_null"
            ],
        ),
        (
            leaf("nps", "between", [9, 7]),
            ["value: the lower bound is greater than the upper bound"],
        ),
        (
            leaf("nps", "between", [1]),
            ["value: expected a list [low, high] of two values, each an integer, got a list of 1"],
        ),
        (
            leaf("nps", "between", [1, "9"]),
            ["value.1: expected an integer for field 'nps', got string"],
        ),
        (
            leaf("country", "in", []),
            [
                "value: expected a non-empty list of at most 1000 values, each a string, "
                "got a list of 0"
            ],
        ),
        (
            leaf("country", "not_in", "FR"),
            ["value: expected a non-empty list of at most 1000 values, each a string, got string"],
        ),
        (
            leaf("country", "in", ["FR", 1, None]),
            [
                "value.1: expected a string for field 'country', got integer",
                "value.2: expected a string for field 'country', got null",
            ],
        ),
        (
            leaf("last_seen", "within_days", -1),
            ["value: expected a whole number of days from 0 to 36500"],
        ),
        (
            leaf("last_seen", "older_than_days", 1.5),
            ["value: expected a whole number of days from 0 to 36500, got number"],
        ),
        (leaf("nps", "is_null", None), ["value: 'is_null' takes no value; remove 'value'"]),
        (leaf("nps", "eq"), ["value: required by 'eq': an integer"]),
        (
            {"field": "nps"},
            ["op: required: one of eq, ne, lt, le, gt, ge, between, in, not_in, is_null, not_null"],
        ),
        (
            leaf("nps", "gte", 1),
            [
                "op: unknown operator 'gte' (did you mean 'ge'?); use eq, ne, lt, le, gt, ge, "
                "between, in, not_in, is_null, not_null"
            ],
        ),
        (
            leaf("nps", 3, 1),
            ["op: expected an operator name (a string), got integer"],
        ),
        (leaf(None, "eq", 1), ["field: expected a field name (a string), got null"]),
        (
            {**leaf("nps", "eq", 1), "negate": True},
            ["negate: unexpected key; a condition has only 'field', 'op' and 'value'"],
        ),
        (
            {"all": [leaf("nps", "eq", 1)], "limit": None},
            ["limit: unexpected key; a combinator object has only the key 'all'"],
        ),
        (
            {"all": [], "any": []},
            ["a rule object has exactly one of 'all', 'any', 'not' or 'field', not 'all', 'any'"],
        ),
        ({"all": []}, ["all: expected a non-empty list of rules ('all' of nothing)"]),
        ({"any": []}, ["any: expected a non-empty list of rules ('any' of nothing)"]),
        ({"any": leaf("nps", "eq", 1)}, ["any: expected a non-empty list of rules, got object"]),
        ({}, ["expected a rule object with 'all', 'any', 'not' or 'field', got an empty object"]),
        (
            {"where": 1},
            ["expected a rule object with 'all', 'any', 'not' or 'field', got keys 'where'"],
        ),
        ([], ["expected a rule object with 'all', 'any', 'not' or 'field', got list"]),
        ("nps > 3", ["expected a rule object with 'all', 'any', 'not' or 'field', got string"]),
        (
            {"not": [leaf("nps", "eq", 1)]},
            ["not: expected a rule object with 'all', 'any', 'not' or 'field', got list"],
        ),
    ],
)
def test_bad_rules_are_reported_with_their_path(rule: object, expected: list[str]) -> None:
    assert problems(rule) == expected


def test_unknown_field_without_a_close_match_lists_the_fields() -> None:
    [problem] = problems(leaf("zzz", "eq", 1))
    assert problem.startswith("field: unknown field 'zzz'; fields: order_count, revenue, ")
    assert problem.endswith(", churn_risk")


def test_every_problem_is_reported_not_just_the_first() -> None:
    rule = {
        "all": [
            leaf("revnue", "gt", 10),
            leaf("rfm_segment", "lt", "b"),
            {"not": leaf("clv", "eq", "12")},
            {"any": []},
            leaf("nps", "eq", 1),
        ],
    }
    assert problems(rule) == [
        "all.0.field: unknown field 'revnue' (did you mean 'revenue'?)",
        f"all.1.op: 'lt' does not apply to text field 'rfm_segment'; use {TEXT_OPS}",
        "all.2.not.value: expected a number for field 'clv', got string",
        "all.3.any: expected a non-empty list of rules ('any' of nothing)",
    ]


def test_unknown_field_and_bad_operator_are_both_reported() -> None:
    assert problems(leaf("revnue", "~", 1)) == [
        "field: unknown field 'revnue' (did you mean 'revenue'?)",
        "op: unknown operator '~'; use eq, ne, lt, le, gt, ge, between, in, not_in, "
        "within_days, older_than_days, is_null, not_null",
    ]


def nested(depth: int) -> dict[str, Any]:
    """A condition under ``depth - 1`` nots: a rule ``depth`` levels deep."""
    rule: dict[str, Any] = leaf("nps", "eq", 1)
    for _ in range(depth - 1):
        rule = {"not": rule}
    return rule


def test_nesting_is_limited() -> None:
    assert isinstance(parse_rule(nested(MAX_DEPTH)), Not)
    path = ".".join(["not"] * MAX_DEPTH)
    assert problems(nested(MAX_DEPTH + 1)) == [f"{path}: rules nest at most 16 levels deep"]


def test_number_of_conditions_is_limited() -> None:
    assert isinstance(parse_rule({"any": [leaf("nps", "eq", i) for i in range(256)]}), AnyOf)
    too_many = {"any": [leaf("nps", "eq", i) for i in range(MAX_CONDITIONS + 1)]}
    assert problems(too_many) == ["a rule has at most 256 conditions, not 257"]


def test_in_lists_are_limited() -> None:
    assert parse_rule(leaf("nps", "in", list(range(1000))))
    [problem] = problems(leaf("nps", "in", list(range(1001))))
    assert problem == (
        "value: expected a non-empty list of at most 1000 values, each an integer, "
        "got a list of 1001"
    )


def test_rule_error_is_a_value_error_that_pickles_and_summarises() -> None:
    error = RuleError([RuleProblem("a", "x"), RuleProblem("", "y"), RuleProblem("b", "z")])
    assert isinstance(error, ValueError)
    assert str(error) == "a: x; y; b: z"
    assert error.summary(limit=1) == "a: x; and 2 more"
    assert pickle.loads(pickle.dumps(error)).problems == error.problems


# --- SegmentDefined --------------------------------------------------------------------

SEGMENT_EVENT: dict[str, Any] = {
    "event_id": str(uuid.UUID(int=1)),
    "type": "segment.defined",
    "schema_version": 1,
    "occurred_at": "2024-05-01T12:00:00Z",
    "source": {"system": "loopcrm", "channel": "system"},
    "payload": {"segment_id": "seg-1", "version": 1, "name": "Lapsing VIPs"},
}


def segment_event(rule: object) -> dict[str, Any]:
    return {**SEGMENT_EVENT, "payload": {**SEGMENT_EVENT["payload"], "rule": rule}}


def test_segment_defined_with_a_bad_rule_names_the_problem() -> None:
    rule = {"all": [leaf("revnue", "gt", 10), leaf("rfm_segment", "lt", "b")]}
    with pytest.raises(EventValidationError) as info:
        parse_event(segment_event(rule))
    [error] = info.value.errors
    assert (error.loc, error.kind) == ("payload.rule", "segment_rule")
    assert error.msg == (
        "invalid segment rule: all.0.field: unknown field 'revnue' (did you mean 'revenue'?); "
        f"all.1.op: 'lt' does not apply to text field 'rfm_segment'; use {TEXT_OPS}"
    )
    with pytest.raises(pydantic.ValidationError, match="unknown field 'revnue'"):
        SegmentDefined(segment_id="s", version=1, name="n", rule=rule)


def test_segment_defined_error_lists_at_most_twenty_problems() -> None:
    rule = {"any": [leaf("nps", "eq", "x")] * 25}
    with pytest.raises(EventValidationError) as info:
        parse_event(segment_event(rule))
    assert info.value.errors[0].msg.endswith("; and 5 more")


def test_segment_defined_keeps_the_rule_as_written() -> None:
    rule = {"all": [leaf("clv", ">=", 500), leaf("last_seen", "<", "2024-05-01T14:00:00+02:00")]}
    payload = SegmentDefined(segment_id="s", version=1, name="VIP", rule=rule)
    envelope = new_event(
        payload, source=Source(system="loopcrm", channel=Channel.SYSTEM), occurred_at=NOW
    )
    assert envelope.payload.rule == rule  # type: ignore[attr-defined]
    assert parse_event(segment_event(rule)).payload.rule == rule  # type: ignore[attr-defined]


# --- Python semantics ------------------------------------------------------------------

NULL_FALSE_LEAVES = [
    leaf("nps", "eq", 1),
    leaf("nps", "ne", 1),
    leaf("nps", "lt", 1),
    leaf("nps", "le", 1),
    leaf("nps", "gt", 1),
    leaf("nps", "ge", 1),
    leaf("nps", "between", [0, 10]),
    leaf("nps", "in", [1]),
    leaf("nps", "not_in", [1]),
    leaf("last_seen", "within_days", 30),
    leaf("last_seen", "older_than_days", 30),
    leaf("email_marketing_consent", "ne", True),
    leaf("country", "not_in", ["FR"]),
    leaf("nps", "not_null"),
]


@pytest.mark.parametrize("rule", NULL_FALSE_LEAVES, ids=lambda r: f"{r['field']}-{r['op']}")
def test_conditions_on_null_are_false_and_their_negation_true(rule: dict[str, Any]) -> None:
    for facts in ({}, dict.fromkeys(FIELDS)):
        assert predicate(parse_rule(rule), NOW)(facts) is False
        assert predicate(parse_rule({"not": rule}), NOW)(facts) is True


def test_is_null_is_the_only_condition_true_on_null() -> None:
    rule = parse_rule(leaf("gender", "is_null"))
    assert predicate(rule, NOW)({}) is True
    assert predicate(rule, NOW)({"gender": None}) is True
    assert predicate(rule, NOW)({"gender": "f"}) is False


@pytest.mark.parametrize(
    ("rule", "facts", "expected"),
    [
        (leaf("nps", "ne", 1), {"nps": 2}, True),
        (leaf("nps", "ne", 1), {"nps": 1}, False),
        (leaf("nps", "between", [1, 3]), {"nps": 1}, True),
        (leaf("nps", "between", [1, 3]), {"nps": 3}, True),
        (leaf("nps", "between", [1, 3]), {"nps": 4}, False),
        (leaf("revenue", "eq", 100), {"revenue": 100}, True),
        (leaf("revenue", "gt", 99.5), {"revenue": 100}, True),
        (leaf("country", "not_in", ["FR", "DE"]), {"country": "IT"}, True),
        (leaf("country", "in", ["FR", "DE"]), {"country": "fr"}, False),
        (leaf("email_marketing_consent", "eq", False), {"email_marketing_consent": False}, True),
        (leaf("last_seen", "lt", "2024-05-01T02:00:00+02:00"), {"last_seen": T}, False),
        (leaf("last_seen", "le", "2024-05-01T02:00:00+02:00"), {"last_seen": T}, True),
        (
            {"all": [leaf("nps", "ge", 9), {"not": leaf("country", "eq", "FR")}]},
            {"nps": 10, "country": None},
            True,
        ),
        ({"any": [leaf("nps", "ge", 9), leaf("clv", "gt", 1)]}, {"clv": 2.0}, True),
        ({"any": [leaf("nps", "ge", 9), leaf("clv", "gt", 1)]}, {"clv": 0.5}, False),
    ],
)
def test_predicate_evaluates_facts(
    rule: dict[str, Any], facts: dict[str, Any], expected: bool
) -> None:
    assert predicate(parse_rule(rule), NOW)(facts) is expected


def test_day_windows_cut_at_now_minus_n_days() -> None:
    cut = NOW - timedelta(days=90)
    within = predicate(parse_rule(leaf("last_response_at", "within_days", 90)), NOW)
    older = predicate(parse_rule(leaf("last_response_at", "older_than_days", 90)), NOW)
    for at, inside in [(cut, True), (cut - timedelta(microseconds=1), False), (NOW, True)]:
        assert within({"last_response_at": at}) is inside
        assert older({"last_response_at": at}) is not inside
        assert within({"last_response_at": at.astimezone(PLUS_2)}) is inside
    assert cutoff(NOW.astimezone(PLUS_2), 90) == cut


def test_naive_now_and_naive_timestamp_facts_are_refused() -> None:
    rule = parse_rule(leaf("last_seen", "within_days", 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        predicate(rule, datetime(2024, 5, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        to_sql(rule, facts_table(sa.MetaData()), datetime(2024, 5, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        predicate(rule, NOW)({"last_seen": datetime(2024, 5, 1)})


# --- SQL -------------------------------------------------------------------------------


def facts_table(metadata: sa.MetaData, name: str = "facts", schema: str | None = None) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        *fact_columns(),
        schema=schema,
    )


def test_fact_columns_are_new_typed_nullable_columns_per_field() -> None:
    first, second = fact_columns(), fact_columns()
    assert [c.name for c in first] == list(FIELDS)
    assert all(a is not b for a, b in zip(first, second, strict=True))
    assert all(c.nullable for c in first)
    types = {c.name: type(c.type) for c in first}
    assert types["order_count"] is sa.BigInteger
    assert types["clv"] is sa.Double
    assert types["country"] is sa.Text
    assert types["email_marketing_consent"] is sa.Boolean
    last_seen = next(c for c in first if c.name == "last_seen")
    assert isinstance(last_seen.type, sa.DateTime) and last_seen.type.timezone


def test_day_windows_are_bound_parameters_not_sql_date_arithmetic() -> None:
    table = facts_table(sa.MetaData())
    clause = to_sql(parse_rule(leaf("last_seen", "within_days", 7)), table, NOW)
    compiled = clause.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    assert str(compiled).startswith(
        "facts.last_seen IS NOT NULL AND facts.last_seen >= %(last_seen_1)s"
    )
    assert compiled.params == {"last_seen_1": NOW - timedelta(days=7)}


# --- property: SQL and Python agree ----------------------------------------------------

NOWS = [NOW, datetime(2024, 3, 31, 3, 30, tzinfo=PLUS_2)]
DAYS = [0, 1, 7, 90]
INTEGERS = [-(2**63), -3, -1, 0, 1, 2, 7, 2**31, 2**63 - 1]
NUMBERS = [-2.5, -0.0, 0.0, 0.1, 0.30000000000000004, 1.0, 2.5, 1e300]
TEXTS = ["", "a", "A", "b", "ab", "é", "e", "gold", "Gold", " gold", "ß", "ss"]
SPELLINGS = {
    op: [op.value, *(alias for alias, target in OP_ALIASES.items() if target is op)] for op in Op
}


def instants(now: datetime) -> list[datetime]:
    """Timestamps at and around every cutoff of ``now`` (and a few fixed ones)."""
    around = [now.astimezone(UTC) - timedelta(days=d) for d in DAYS] + [
        T,
        datetime(1970, 1, 1, tzinfo=UTC),
    ]
    step = timedelta(microseconds=1)
    return sorted({t + delta for t in around for delta in (-step, timedelta(0), step)})


def fact_values(kind: FieldType, now: datetime) -> st.SearchStrategy[Any]:
    """Values a fact of ``kind`` may hold; the pools overlap the rules' constants."""
    pools: dict[FieldType, list[Any]] = {
        FieldType.INTEGER: INTEGERS,
        FieldType.NUMBER: [*NUMBERS, 3, 2**53 + 1],  # ints are read as doubles
        FieldType.TEXT: TEXTS,
        FieldType.BOOLEAN: [True, False],
        FieldType.TIMESTAMP: instants(now),
    }
    return st.sampled_from(pools[kind])


def rule_constants(kind: FieldType, now: datetime) -> st.SearchStrategy[Any]:
    """Native constants of a rule on a ``kind`` field (encoded to JSON by ``as_json``)."""
    if kind is FieldType.INTEGER:
        return st.sampled_from([*INTEGERS, 2**40])
    if kind is FieldType.NUMBER:
        return st.sampled_from([*NUMBERS, 0, 1, 3, 2**53, -(2**53) - 1])
    return fact_values(kind, now)


def as_json(value: Any, offset: bool) -> Any:
    if isinstance(value, datetime):
        return (value.astimezone(PLUS_2) if offset else value).isoformat()
    return value


@st.composite
def conditions(draw: st.DrawFn, now: datetime) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(FIELDS)))
    kind = FIELDS[name]
    op = draw(st.sampled_from(OPS_BY_TYPE[kind]))
    rule = leaf(name, draw(st.sampled_from(SPELLINGS[op])))
    constants = rule_constants(kind, now)
    offset = draw(st.booleans())
    if op in (Op.IS_NULL, Op.NOT_NULL):
        return rule
    if op in (Op.WITHIN_DAYS, Op.OLDER_THAN_DAYS):
        value: Any = draw(st.sampled_from(DAYS))
    elif op is Op.BETWEEN:
        value = [as_json(v, offset) for v in sorted(draw(st.tuples(constants, constants)))]
    elif op in (Op.IN, Op.NOT_IN):
        value = [as_json(v, offset) for v in draw(st.lists(constants, min_size=1, max_size=4))]
    else:
        value = as_json(draw(constants), offset)
    return {**rule, "value": value}


def rules(now: datetime) -> st.SearchStrategy[dict[str, Any]]:
    def combine(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        lists = st.lists(children, min_size=1, max_size=4)
        return st.one_of(
            lists.map(lambda rs: {"all": rs}),
            lists.map(lambda rs: {"any": rs}),
            children.map(lambda r: {"not": r}),
        )

    return st.recursive(conditions(now), combine, max_leaves=10)


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], datetime, list[dict[str, Any]]]:
    """A rule, a ``now``, and fact rows (half their values null) for the rule's fields."""
    now = draw(st.sampled_from(NOWS))
    rule = draw(rules(now))
    names = sorted(rule_fields(parse_rule(rule)))
    row = st.fixed_dictionaries(
        {name: st.none() | fact_values(FIELDS[name], now) for name in names}
    )
    return rule, now, draw(st.lists(row, min_size=1, max_size=20))


def assert_sql_agrees(
    conn: sa.Connection,
    table: sa.Table,
    rule_json: dict[str, Any],
    now: datetime,
    rows: list[dict[str, Any]],
) -> None:
    """Rows selected by ``to_sql`` are those ``predicate`` accepts; NOT selects the rest."""
    rule = parse_rule(rule_json)
    full = [{**dict.fromkeys(FIELDS), **row, "id": i} for i, row in enumerate(rows)]
    accepts = predicate(rule, now)
    expected = {row["id"] for row in full if accepts(row)}
    clause = to_sql(rule, table, now)
    with conn.begin() as transaction:
        conn.execute(table.insert(), full)
        selected = set(conn.execute(sa.select(table.c.id).where(clause)).scalars())
        rest = set(conn.execute(sa.select(table.c.id).where(sa.not_(clause))).scalars())
        transaction.rollback()
    assert selected == expected, rule_json
    assert rest == {row["id"] for row in full} - expected, rule_json


def check_sql_agrees_with_python(conn: sa.Connection, table: sa.Table, examples: int) -> None:
    """Property: for random rules and fact rows, SQL on ``conn`` and Python agree."""

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=cases())
    def agree(case: tuple[dict[str, Any], datetime, list[dict[str, Any]]]) -> None:
        assert_sql_agrees(conn, table, *case)

    agree()


@pytest.fixture
def sqlite_facts() -> Iterator[tuple[sa.Connection, sa.Table]]:
    engine = sa.create_engine("sqlite://")
    table = facts_table(sa.MetaData())
    table.metadata.create_all(engine)
    with engine.connect() as conn:
        yield conn, table
    engine.dispose()


def test_sql_agrees_with_python_on_sqlite(sqlite_facts: tuple[sa.Connection, sa.Table]) -> None:
    check_sql_agrees_with_python(*sqlite_facts, examples=300)


@given(rule=st.sampled_from(NOWS).flatmap(rules))
@settings(max_examples=100, deadline=None)
def test_canonical_json_round_trips(rule: dict[str, Any]) -> None:
    parsed = parse_rule(rule)
    canonical = rule_to_json(parsed)
    assert parse_rule(canonical) == parsed
    assert rule_to_json(parse_rule(canonical)) == canonical


def test_hand_written_null_cases_agree_on_sqlite(
    sqlite_facts: tuple[sa.Connection, sa.Table],
) -> None:
    rows = [{}, {"nps": 1, "country": "FR", "email_marketing_consent": False}]
    for rule in [*NULL_FALSE_LEAVES, leaf("gender", "is_null")]:
        for negate in (False, True):
            assert_sql_agrees(*sqlite_facts, {"not": rule} if negate else rule, NOW, rows)
