"""Validation errors of the event contract, flattened for producers, logs and dead letters.

Pydantic's own ``ValidationError`` is rich but verbose and echoes input values (which may
be personal data). Everything that leaves ``schemas`` raises ``EventValidationError``
instead: one ``FieldError`` per problem, addressed by a dotted path into the event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import PydanticCustomError


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem in an event: where (``payload.lines.0.quantity``), what, and its kind."""

    loc: str
    msg: str
    kind: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.msg}" if self.loc else self.msg


class EventValidationError(ValueError):
    """An event (or part of one) does not satisfy the contract.

    ``str(exc)`` is one readable line per error, so it can be returned in a 4xx body or
    stored as a dead-letter reason as is.
    """

    errors: list[FieldError]

    def __init__(self, errors: Sequence[FieldError]) -> None:
        if not errors:
            raise ValueError("EventValidationError needs at least one FieldError")
        self.errors = list(errors)
        super().__init__("\n".join(str(error) for error in self.errors))

    def __reduce__(self) -> tuple[type[EventValidationError], tuple[list[FieldError]]]:
        return (type(self), (self.errors,))

    @classmethod
    def single(cls, loc: str, msg: str, kind: str) -> EventValidationError:
        return cls([FieldError(loc=loc, msg=msg, kind=kind)])

    @classmethod
    def from_pydantic(cls, exc: ValidationError, *, prefix: str = "") -> EventValidationError:
        """Flatten a pydantic error; ``prefix`` is prepended to every ``loc`` (e.g. ``payload``)."""
        return cls(
            [
                FieldError(
                    loc=_join_loc(prefix, error["loc"]),
                    msg=error["msg"],
                    kind=error["type"],
                )
                for error in exc.errors(include_url=False, include_input=False)
            ]
        )


def _join_loc(prefix: str, loc: Iterable[int | str]) -> str:
    parts = [prefix] if prefix else []
    parts.extend(str(part) for part in loc)
    return ".".join(parts)


def custom_error(kind: str, message: str, **context: object) -> PydanticCustomError:
    """A pydantic error with our own wording (no "Value error, " prefix).

    Values are passed as context so braces in user input are never read as placeholders.
    """
    return PydanticCustomError(kind, message, context or None)


def unknown_type_error(event_type: object, known: Iterable[str]) -> EventValidationError:
    return EventValidationError.single(
        "type",
        f"unknown event type {event_type!r}; known types: {', '.join(sorted(known))}",
        "unknown_event_type",
    )
