"""The segment rule language: the fields a rule may use, their types, and the rule AST.

A rule is evaluated over a customer's *facts*: one flat record per customer derived from
its 360 state and latest assessment (``projections.facts``), stored as columns of the
``customers`` table. The same names are used by the SQL and the Python evaluators
(``projections.segment_rules``), which must agree row for row.

A rule is JSON: ``{"all": [rule, ...]}``, ``{"any": [rule, ...]}``, ``{"not": rule}`` or a
condition ``{"field": NAME, "op": OP, "value": V}``. ``parse_rule`` checks it against
``FIELDS`` and turns it into an immutable AST whose values are already typed (timestamps
are aware UTC datetimes, numbers floats), so evaluators never re-validate. A condition
on a null field is false, except ``is_null``; ``not`` is plain two-valued negation.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from schemas.fields import INT64_MAX, MAX_TEXT_LENGTH


class FieldType(StrEnum):
    INTEGER = "integer"
    NUMBER = "number"
    TEXT = "text"
    TIMESTAMP = "timestamp"
    BOOLEAN = "boolean"


_I, _N, _S, _T, _B = (
    FieldType.INTEGER,
    FieldType.NUMBER,
    FieldType.TEXT,
    FieldType.TIMESTAMP,
    FieldType.BOOLEAN,
)

FIELDS: Final = MappingProxyType(
    {
        # orders (amounts in the customer's main currency: the one with most orders)
        "order_count": _I,
        "revenue": _N,
        "average_order_value": _N,
        "return_count": _I,
        "currency": _S,
        "first_order_at": _T,
        "last_order_at": _T,
        # activity
        "event_count": _I,
        "first_seen": _T,
        "last_seen": _T,
        "preferred_channel": _S,
        "open_ticket_count": _I,
        "nps": _I,
        # profile
        "country": _S,
        "locale": _S,
        "gender": _S,
        # consent for marketing per channel (null: never expressed)
        "email_marketing_consent": _B,
        "sms_marketing_consent": _B,
        "push_marketing_consent": _B,
        # responses (opens or clicks) to messages, campaign or not
        "emails_opened": _I,
        "emails_clicked": _I,
        "email_response_rate": _N,
        "sms_response_rate": _N,
        "push_response_rate": _N,
        "last_response_at": _T,
        "last_email_response_at": _T,
        "last_sms_response_at": _T,
        "last_push_response_at": _T,
        # campaigns: targeted/responded/streak count the treatment group only (control
        # customers were not contacted); conversions count both groups
        "campaigns_targeted": _I,
        "campaigns_responded": _I,
        "ignored_campaigns_streak": _I,
        "conversions": _I,
        # latest assessment
        "assessed_at": _T,
        "recency_score": _I,
        "frequency_score": _I,
        "monetary_score": _I,
        "rfm_segment": _S,
        "value_tier": _S,
        "clv": _N,
        "p_alive": _N,
        "churn_risk": _N,
    }
)
"""Every field a rule may name, with its type. All are nullable (unknown or not yet seen)."""

# --- operators -------------------------------------------------------------------------


class Op(StrEnum):
    """Condition operators, by canonical name (what ``rule_to_json`` writes)."""

    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    BETWEEN = "between"
    IN = "in"
    NOT_IN = "not_in"
    WITHIN_DAYS = "within_days"
    OLDER_THAN_DAYS = "older_than_days"
    IS_NULL = "is_null"
    NOT_NULL = "not_null"


OP_ALIASES: Final = MappingProxyType(
    {"=": Op.EQ, "==": Op.EQ, "!=": Op.NE, "<": Op.LT, "<=": Op.LE, ">": Op.GT, ">=": Op.GE}
)
"""Other spellings accepted in input; the AST and canonical JSON use the ``Op`` name."""

_ORDERED = (Op.LT, Op.LE, Op.GT, Op.GE, Op.BETWEEN)
_ANY_TYPE = (Op.EQ, Op.NE)
_NULL_TESTS = (Op.IS_NULL, Op.NOT_NULL)

OPS_BY_TYPE: Final = MappingProxyType(
    {
        FieldType.INTEGER: (*_ANY_TYPE, *_ORDERED, Op.IN, Op.NOT_IN, *_NULL_TESTS),
        FieldType.NUMBER: (*_ANY_TYPE, *_ORDERED, Op.IN, Op.NOT_IN, *_NULL_TESTS),
        # no ordering on text: collations differ between SQL databases and Python
        FieldType.TEXT: (*_ANY_TYPE, Op.IN, Op.NOT_IN, *_NULL_TESTS),
        FieldType.TIMESTAMP: (
            *_ANY_TYPE,
            *_ORDERED,
            Op.WITHIN_DAYS,
            Op.OLDER_THAN_DAYS,
            *_NULL_TESTS,
        ),
        FieldType.BOOLEAN: (*_ANY_TYPE, *_NULL_TESTS),
    }
)
"""The operators each field type allows, in the order error messages list them."""

MAX_DEPTH: Final = 16
"""Deepest nesting of a rule; a lone condition has depth 1."""
MAX_CONDITIONS: Final = 256
MAX_IN_VALUES: Final = 1_000
MAX_DAYS: Final = 36_500
"""Upper bound of ``within_days``/``older_than_days`` (100 years), far from date overflow."""

# --- AST -------------------------------------------------------------------------------

RuleScalar = int | float | str | bool | datetime
RuleValue = RuleScalar | tuple[RuleScalar, ...] | None
"""A condition's value: a scalar; ``(lo, hi)`` for between; the values of in/not_in;
the day count of within_days/older_than_days; ``None`` for is_null/not_null."""


@dataclass(frozen=True, slots=True)
class Condition:
    """``field op value``, false when the field is null (unless ``op`` is ``is_null``)."""

    field: str
    op: Op
    value: RuleValue = None


@dataclass(frozen=True, slots=True)
class All:
    """True when every child rule is true."""

    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        if not self.rules:
            raise ValueError("All needs at least one rule")


@dataclass(frozen=True, slots=True)
class AnyOf:
    """True when at least one child rule is true."""

    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        if not self.rules:
            raise ValueError("AnyOf needs at least one rule")


@dataclass(frozen=True, slots=True)
class Not:
    """True when the child rule is false (two-valued: null facts already made it false)."""

    rule: Rule


Rule = All | AnyOf | Not | Condition

# --- errors ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One problem in a rule: where (``all.1.field``; empty for the whole rule) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class RuleError(ValueError):
    """A rule is not valid; ``problems`` lists every problem found, in document order."""

    problems: list[RuleProblem]

    def __init__(self, problems: list[RuleProblem]) -> None:
        if not problems:
            raise ValueError("RuleError needs at least one problem")
        self.problems = list(problems)
        super().__init__(self.summary())

    def __reduce__(self) -> tuple[type[RuleError], tuple[list[RuleProblem]]]:
        return (type(self), (self.problems,))

    def summary(self, limit: int | None = None) -> str:
        """The problems on one line, ``; ``-separated; past ``limit``, only their count."""
        shown = self.problems if limit is None else self.problems[:limit]
        text = "; ".join(str(problem) for problem in shown)
        hidden = len(self.problems) - len(shown)
        return f"{text}; and {hidden} more" if hidden else text


# --- parsing ---------------------------------------------------------------------------

_COMBINATORS: Final = ("all", "any", "not")
_CONDITION_KEYS: Final = ("field", "op", "value")


@dataclass
class _Parser:
    """Collects problems while walking the JSON, so that all of them are reported."""

    problems: list[RuleProblem] = field(default_factory=list)
    conditions: int = 0

    def problem(self, path: str, message: str) -> None:
        self.problems.append(RuleProblem(path, message))

    def rule(self, data: object, path: str, depth: int) -> Rule | None:
        if depth > MAX_DEPTH:
            self.problem(path, f"rules nest at most {MAX_DEPTH} levels deep")
            return None
        if not isinstance(data, Mapping):
            self.problem(
                path,
                f"expected a rule object with 'all', 'any', 'not' or 'field', got {_kind(data)}",
            )
            return None
        heads = [key for key in (*_COMBINATORS, "field") if key in data]
        if len(heads) > 1:
            self.problem(
                path,
                f"a rule object has exactly one of 'all', 'any', 'not' or 'field', "
                f"not {_quoted(heads)}",
            )
            return None
        if not heads:
            got = (
                f"keys {_quoted([_short(str(k), quote=False) for k in list(data)[:5]])}"
                if data
                else "an empty object"
            )
            self.problem(
                path, f"expected a rule object with 'all', 'any', 'not' or 'field', got {got}"
            )
            return None
        if heads[0] == "field":
            return self.condition(data, path)
        return self.combinator(heads[0], data, path, depth)

    def combinator(
        self, head: str, data: Mapping[Any, object], path: str, depth: int
    ) -> Rule | None:
        self.extra_keys(data, (head,), path, f"a combinator object has only the key {head!r}")
        if head == "not":
            child = self.rule(data["not"], _join(path, "not"), depth + 1)
            return None if child is None else Not(child)
        items = data[head]
        here = _join(path, head)
        if not isinstance(items, list):
            self.problem(here, f"expected a non-empty list of rules, got {_kind(items)}")
            return None
        if not items:
            self.problem(here, f"expected a non-empty list of rules ('{head}' of nothing)")
            return None
        children = [self.rule(item, _join(here, i), depth + 1) for i, item in enumerate(items)]
        parsed = tuple(child for child in children if child is not None)
        if len(parsed) < len(children):
            return None
        return All(parsed) if head == "all" else AnyOf(parsed)

    def condition(self, data: Mapping[Any, object], path: str) -> Condition | None:
        self.conditions += 1
        self.extra_keys(
            data, _CONDITION_KEYS, path, "a condition has only 'field', 'op' and 'value'"
        )
        name = self.field_name(data["field"], _join(path, "field"))
        op = self.operator(data, path, name)
        if name is None or op is None:
            return None
        if op in _NULL_TESTS:
            if "value" in data:
                self.problem(_join(path, "value"), f"{op.value!r} takes no value; remove 'value'")
                return None
            return Condition(name, op)
        if "value" not in data:
            self.problem(
                _join(path, "value"), f"required by {op.value!r}: {_expected(op, FIELDS[name])}"
            )
            return None
        return _ValueParser(self, name, op).parse(data["value"], _join(path, "value"))

    def field_name(self, name: object, path: str) -> str | None:
        if not isinstance(name, str):
            self.problem(path, f"expected a field name (a string), got {_kind(name)}")
            return None
        if name in FIELDS:
            return name
        close = difflib.get_close_matches(name, list(FIELDS), n=3, cutoff=0.6)
        if close:
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?"
            self.problem(path, f"unknown field {_short(name)} ({hint})")
        else:
            self.problem(path, f"unknown field {_short(name)}; fields: {', '.join(FIELDS)}")
        return None

    def operator(self, data: Mapping[Any, object], path: str, name: str | None) -> Op | None:
        here = _join(path, "op")
        kind = None if name is None else FIELDS[name]
        allowed = OPS_BY_TYPE[kind] if kind is not None else tuple(Op)
        if "op" not in data:
            self.problem(here, f"required: one of {_names(allowed)}")
            return None
        given = data["op"]
        if not isinstance(given, str):
            self.problem(here, f"expected an operator name (a string), got {_kind(given)}")
            return None
        op = _op_named(given)
        if op is None:
            hint = _suggest_op(given)
            self.problem(here, f"unknown operator {_short(given)}{hint}; use {_names(allowed)}")
            return None
        if kind is not None and op not in allowed:
            self.problem(
                here,
                f"{given!r} does not apply to {kind.value} field {name!r}; use {_names(allowed)}",
            )
            return None
        return op

    def extra_keys(
        self, data: Mapping[Any, object], allowed: tuple[str, ...], path: str, why: str
    ) -> None:
        for key in data:
            if key not in allowed:
                self.problem(_join(path, _short(str(key), quote=False)), f"unexpected key; {why}")


@dataclass
class _ValueParser:
    """Checks and converts the value of one condition whose field and operator are valid."""

    parser: _Parser
    name: str
    op: Op

    @property
    def kind(self) -> FieldType:
        return FIELDS[self.name]

    def parse(self, value: object, path: str) -> Condition | None:
        if self.op in (Op.WITHIN_DAYS, Op.OLDER_THAN_DAYS):
            days = self.days(value, path)
            return None if days is None else Condition(self.name, self.op, days)
        if self.op is Op.BETWEEN:
            bounds = self.between(value, path)
            return None if bounds is None else Condition(self.name, self.op, bounds)
        if self.op in (Op.IN, Op.NOT_IN):
            values = self.values(value, path)
            return None if values is None else Condition(self.name, self.op, values)
        scalar = self.scalar(value, path)
        return None if scalar is None else Condition(self.name, self.op, scalar)

    def days(self, value: object, path: str) -> int | None:
        if type(value) is int and 0 <= value <= MAX_DAYS:
            return value
        got = "" if type(value) is int else f", got {_kind(value)}"
        self.parser.problem(path, f"expected {_expected(self.op, self.kind)}{got}")
        return None

    def between(self, value: object, path: str) -> tuple[RuleScalar, ...] | None:
        if not isinstance(value, list) or len(value) != 2:
            got = f"a list of {len(value)}" if isinstance(value, list) else _kind(value)
            self.parser.problem(path, f"expected {_expected(self.op, self.kind)}, got {got}")
            return None
        lo, hi = (self.scalar(bound, _join(path, i)) for i, bound in enumerate(value))
        if lo is None or hi is None:
            return None
        if lo > hi:  # type: ignore[operator]  # same type: both ints/floats or datetimes
            self.parser.problem(path, "the lower bound is greater than the upper bound")
            return None
        return (lo, hi)

    def values(self, value: object, path: str) -> tuple[RuleScalar, ...] | None:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
            got = f"a list of {len(value)}" if isinstance(value, list) else _kind(value)
            self.parser.problem(path, f"expected {_expected(self.op, self.kind)}, got {got}")
            return None
        items = [self.scalar(item, _join(path, i)) for i, item in enumerate(value)]
        checked = tuple(item for item in items if item is not None)
        return checked if len(checked) == len(items) else None

    def scalar(self, value: object, path: str) -> RuleScalar | None:
        """The value converted to the field's type, or None after recording a problem."""
        converted, problem = _SCALARS[self.kind](value, self.name)
        if problem is not None:
            self.parser.problem(path, problem)
        return converted


def _integer(value: object, name: str) -> tuple[RuleScalar | None, str | None]:
    if type(value) is not int:
        return None, f"expected an integer for field {name!r}, got {_kind(value)}"
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        return None, f"expected an integer that fits in 64 bits (signed) for field {name!r}"
    return value, None


def _number(value: object, name: str) -> tuple[RuleScalar | None, str | None]:
    if type(value) is not int and type(value) is not float:
        return None, f"expected a number for field {name!r}, got {_kind(value)}"
    try:
        converted = float(value)
    except OverflowError:
        converted = math.inf
    if not math.isfinite(converted):
        return None, f"expected a finite number for field {name!r}"
    return converted, None


def _text(value: object, name: str) -> tuple[RuleScalar | None, str | None]:
    if not isinstance(value, str):
        return None, f"expected a string for field {name!r}, got {_kind(value)}"
    if len(value) > MAX_TEXT_LENGTH or "\x00" in value:
        return None, (
            f"expected a string of at most {MAX_TEXT_LENGTH} characters, without NUL, "
            f"for field {name!r}"
        )
    return value, None


def _boolean(value: object, name: str) -> tuple[RuleScalar | None, str | None]:
    if not isinstance(value, bool):
        return None, f"expected true or false for field {name!r}, got {_kind(value)}"
    return value, None


_TIMESTAMP_HINT: Final = "ISO-8601 with a timezone, e.g. '2024-05-01T12:00:00Z'"


def _timestamp(value: object, name: str) -> tuple[RuleScalar | None, str | None]:
    if not isinstance(value, str):
        return None, (
            f"expected a timestamp string ({_TIMESTAMP_HINT}) for field {name!r}, "
            f"got {_kind(value)}"
        )
    try:
        parsed = datetime.fromisoformat(value) if value[:4].isdigit() else None
    except ValueError:
        parsed = None
    if parsed is None:
        return None, f"expected a timestamp ({_TIMESTAMP_HINT}) for field {name!r}"
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None, (
            f"timestamp for field {name!r} has no timezone; add 'Z' or an offset such as '+02:00'"
        )
    try:
        return parsed.astimezone(UTC), None
    except OverflowError:
        return None, f"timestamp for field {name!r} is out of range"


_SCALARS: Final = MappingProxyType(
    {
        FieldType.INTEGER: _integer,
        FieldType.NUMBER: _number,
        FieldType.TEXT: _text,
        FieldType.TIMESTAMP: _timestamp,
        FieldType.BOOLEAN: _boolean,
    }
)

_SCALAR_NAMES: Final = MappingProxyType(
    {
        FieldType.INTEGER: "an integer",
        FieldType.NUMBER: "a number",
        FieldType.TEXT: "a string",
        FieldType.TIMESTAMP: "a timestamp",
        FieldType.BOOLEAN: "true or false",
    }
)


def _expected(op: Op, kind: FieldType) -> str:
    """What the value of ``op`` on a ``kind`` field must be, for error messages."""
    scalar = _SCALAR_NAMES[kind]
    if op in (Op.WITHIN_DAYS, Op.OLDER_THAN_DAYS):
        return f"a whole number of days from 0 to {MAX_DAYS}"
    if op is Op.BETWEEN:
        return f"a list [low, high] of two values, each {scalar}"
    if op in (Op.IN, Op.NOT_IN):
        return f"a non-empty list of at most {MAX_IN_VALUES} values, each {scalar}"
    return scalar


def _op_named(given: str) -> Op | None:
    try:
        return OP_ALIASES.get(given) or Op(given)
    except ValueError:
        return None


_OTHER_SPELLINGS: Final = MappingProxyType(
    {
        "gte": Op.GE,
        "lte": Op.LE,
        "neq": Op.NE,
        "<>": Op.NE,
        "equals": Op.EQ,
        "nin": Op.NOT_IN,
        "not in": Op.NOT_IN,
        "isnull": Op.IS_NULL,
        "is_not_null": Op.NOT_NULL,
        "notnull": Op.NOT_NULL,
    }
)
"""Spellings of other query languages: suggested in errors, never accepted."""


def _suggest_op(given: str) -> str:
    known = _OTHER_SPELLINGS.get(given.lower())
    if known is None:
        close = difflib.get_close_matches(given, [op.value for op in Op], n=1, cutoff=0.6)
        known = Op(close[0]) if close else None
    return "" if known is None else f" (did you mean {known.value!r}?)"


def _kind(value: object) -> str:
    """The JSON type of ``value`` (never the value itself: rules may be logged)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _short(text: str, *, quote: bool = True) -> str:
    """``text`` (quoted) for an error message, cut so hostile input cannot bloat it."""
    cut = text if len(text) <= 60 else text[:60] + "..."
    return repr(cut) if quote else cut


def _join(path: str, part: str | int) -> str:
    return f"{path}.{part}" if path else str(part)


def _names(ops: tuple[Op, ...]) -> str:
    return ", ".join(op.value for op in ops)


def _quoted(keys: list[Any]) -> str:
    return ", ".join(repr(key) for key in keys)


# --- public API ------------------------------------------------------------------------


def parse_rule(data: object) -> Rule:
    """Check a JSON rule and return its AST; raise ``RuleError`` listing every problem.

    Operator aliases become their ``Op``; timestamps become aware UTC datetimes; number
    values become floats (so SQL and Python compare doubles); lists become tuples.
    """
    parser = _Parser()
    rule = parser.rule(data, "", 1)
    if parser.conditions > MAX_CONDITIONS:
        parser.problem(
            "", f"a rule has at most {MAX_CONDITIONS} conditions, not {parser.conditions}"
        )
    if parser.problems or rule is None:
        raise RuleError(parser.problems or [RuleProblem("", "invalid rule")])
    return rule


def rule_to_json(rule: Rule) -> dict[str, Any]:
    """The canonical JSON of a rule: canonical operator names, timestamps in UTC with a
    ``Z``, numbers of number fields as floats. ``parse_rule`` of it gives ``rule`` back."""
    match rule:
        case All(rules):
            return {"all": [rule_to_json(child) for child in rules]}
        case AnyOf(rules):
            return {"any": [rule_to_json(child) for child in rules]}
        case Not(child):
            return {"not": rule_to_json(child)}
        case Condition(name, op, value):
            out: dict[str, Any] = {"field": name, "op": op.value}
            if op not in _NULL_TESTS:
                out["value"] = _value_to_json(value)
            return out
    raise TypeError(f"not a rule: {type(rule).__name__}")  # pragma: no cover


def _value_to_json(value: RuleValue) -> Any:
    if isinstance(value, tuple):
        return [_value_to_json(item) for item in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"
    return value


def conditions(rule: Rule) -> Iterator[Condition]:
    """Every condition of ``rule``, depth first, in document order."""
    match rule:
        case All(rules) | AnyOf(rules):
            for child in rules:
                yield from conditions(child)
        case Not(child):
            yield from conditions(child)
        case Condition():
            yield rule


def rule_fields(rule: Rule) -> set[str]:
    """The names of the fields ``rule`` reads (e.g. to know which facts it depends on)."""
    return {condition.field for condition in conditions(rule)}
