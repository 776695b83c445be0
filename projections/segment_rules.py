"""Segment rules evaluated two ways that agree row for row: in Python and in SQL.

``predicate`` decides membership of one customer from its facts (on each change);
``to_sql`` selects the members of a whole table (when a segment is defined, and to
audit). Both read a rule parsed by ``schemas.rules.parse_rule`` and share its
semantics: a condition on a null fact is false (``ne`` and ``not_in`` too), except
``is_null``; ``not``/``all``/``any`` are plain two-valued logic. So every condition
compiles to a SQL boolean that is never NULL (``x IS NOT NULL AND x > :v``), and NOT
over it is true on NULL rows on PostgreSQL and SQLite alike.

Day windows (``within_days``, ``older_than_days``) are cut at ``now - N days`` computed
here and bound as a parameter: no SQL date arithmetic, one dialect-neutral statement.

Facts contract: one value per ``FIELDS`` name or None (missing keys are None); integers
as ``int``, numbers as finite floats (ints are read as floats), timestamps as aware
datetimes, stored in UTC (SQLite keeps the wall-clock time of what it is given).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from schemas.rules import FIELDS, All, AnyOf, Condition, FieldType, Not, Op, Rule, RuleScalar

Facts = Mapping[str, Any]
Predicate = Callable[[Facts], bool]

_SQL_TYPES: Final[Mapping[FieldType, Callable[[], sa.types.TypeEngine[Any]]]] = {
    FieldType.INTEGER: sa.BigInteger,  # the 64-bit range parse_rule accepts
    FieldType.NUMBER: sa.Double,
    FieldType.TEXT: sa.Text,
    FieldType.TIMESTAMP: lambda: sa.DateTime(timezone=True),
    FieldType.BOOLEAN: sa.Boolean,
}

_COMPARISONS: Final[Mapping[Op, Callable[[Any, Any], Any]]] = {
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
}
"""Operators that compare a fact with one value, the same in Python and SQLAlchemy."""


def fact_columns() -> list[sa.Column[Any]]:
    """New nullable columns, one per rule field, named and typed as ``FIELDS`` says.

    New objects on every call, as a Column belongs to exactly one Table. Integers are
    64-bit like rule constants (a driver that casts parameters to the column type, as
    psycopg 3 does, then never overflows); numbers are double precision so SQL compares
    the same doubles Python does.
    """
    return [sa.Column(name, _SQL_TYPES[kind]()) for name, kind in FIELDS.items()]


def cutoff(now: datetime, days: int) -> datetime:
    """``now - days`` in UTC: ``within_days`` means at or after it, ``older_than_days``
    strictly before it."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC) - timedelta(days=days)


# --- Python ----------------------------------------------------------------------------


def predicate(rule: Rule, now: datetime) -> Predicate:
    """A function telling whether a customer's facts satisfy ``rule`` at ``now``."""
    cutoff(now, 0)  # checks now is aware before any facts are seen
    return _py(rule, now)


def _py(rule: Rule, now: datetime) -> Predicate:
    match rule:
        case All(rules):
            children = [_py(child, now) for child in rules]
            return lambda facts: all(child(facts) for child in children)
        case AnyOf(rules):
            children = [_py(child, now) for child in rules]
            return lambda facts: any(child(facts) for child in children)
        case Not(child_rule):
            child = _py(child_rule, now)
            return lambda facts: not child(facts)
        case Condition():
            return _py_condition(rule, now)
    raise TypeError(f"not a rule: {type(rule).__name__}")  # pragma: no cover


def _py_condition(condition: Condition, now: datetime) -> Predicate:
    name = condition.field
    if condition.op is Op.IS_NULL:
        return lambda facts: facts.get(name) is None
    if condition.op is Op.NOT_NULL:
        return lambda facts: facts.get(name) is not None
    read = _FACT_READERS.get(FIELDS[name], _as_is)
    test = _py_test(condition, now)

    def evaluate(facts: Facts) -> bool:
        value = facts.get(name)
        return value is not None and test(read(value))

    return evaluate


def _py_test(condition: Condition, now: datetime) -> Callable[[Any], bool]:
    """The test of a non-null fact value against the condition's value."""
    op, value = condition.op, condition.value
    if op in _COMPARISONS:
        compare = _COMPARISONS[op]
        return lambda fact: bool(compare(fact, value))
    if op is Op.BETWEEN:
        lo, hi = _pair(value)
        return lambda fact: bool(lo <= fact <= hi)
    if op in (Op.IN, Op.NOT_IN):
        members = frozenset(_items(value))
        inside = op is Op.IN
        return lambda fact: (fact in members) is inside
    if op in (Op.WITHIN_DAYS, Op.OLDER_THAN_DAYS):
        cut = cutoff(now, _days(value))
        if op is Op.WITHIN_DAYS:
            return lambda fact: bool(fact >= cut)
        return lambda fact: bool(fact < cut)
    raise ValueError(f"unsupported operator {op!r}")  # pragma: no cover


def _as_is(value: Any) -> Any:
    return value


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError("timestamp facts must be timezone-aware")
    return value


_FACT_READERS: Final[Mapping[FieldType, Callable[[Any], Any]]] = {
    FieldType.NUMBER: float,  # what a double precision column holds
    FieldType.TIMESTAMP: _aware,
}


# --- SQL -------------------------------------------------------------------------------


def to_sql(rule: Rule, table: sa.Table, now: datetime) -> ColumnElement[bool]:
    """A WHERE clause selecting the rows of ``table`` whose facts satisfy ``rule``.

    ``table.c[field]`` must exist for every field of the rule (see ``fact_columns``).
    The clause is never NULL, so ``not_(to_sql(...))`` selects exactly the other rows.
    """
    cutoff(now, 0)
    return _sql(rule, table, now)


def _sql(rule: Rule, table: sa.Table, now: datetime) -> ColumnElement[bool]:
    match rule:
        case All(rules):
            return sa.and_(*(_sql(child, table, now) for child in rules))
        case AnyOf(rules):
            return sa.or_(*(_sql(child, table, now) for child in rules))
        case Not(child):
            return sa.not_(_sql(child, table, now))
        case Condition():
            return _sql_condition(rule, table.c[rule.field], now)
    raise TypeError(f"not a rule: {type(rule).__name__}")  # pragma: no cover


def _sql_condition(
    condition: Condition, column: sa.ColumnElement[Any], now: datetime
) -> ColumnElement[bool]:
    op, value = condition.op, condition.value
    if op is Op.IS_NULL:
        return column.is_(None)
    if op is Op.NOT_NULL:
        return column.is_not(None)
    test: ColumnElement[bool]
    if op in _COMPARISONS:
        test = _COMPARISONS[op](column, value)
    elif op is Op.BETWEEN:
        lo, hi = _pair(value)
        test = column.between(lo, hi)
    elif op is Op.IN:
        test = column.in_(_items(value))
    elif op is Op.NOT_IN:
        test = column.not_in(_items(value))
    elif op is Op.WITHIN_DAYS:
        test = column >= cutoff(now, _days(value))
    elif op is Op.OLDER_THAN_DAYS:
        test = column < cutoff(now, _days(value))
    else:  # pragma: no cover
        raise ValueError(f"unsupported operator {op!r}")
    # NULL facts make every other test false (not NULL): two-valued NOT stays correct.
    return sa.and_(column.is_not(None), test)


# --- values of a parsed condition ------------------------------------------------------


def _pair(value: object) -> tuple[Any, Any]:
    if not isinstance(value, tuple) or len(value) != 2:
        raise ValueError("between needs a (low, high) pair; use parse_rule")
    return value[0], value[1]


def _items(value: object) -> tuple[RuleScalar, ...]:
    if not isinstance(value, tuple) or not value:
        raise ValueError("in/not_in need a non-empty tuple of values; use parse_rule")
    return value


def _days(value: object) -> int:
    if type(value) is not int:
        raise ValueError("within_days/older_than_days need an int; use parse_rule")
    return value
