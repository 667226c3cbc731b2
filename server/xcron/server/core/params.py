"""Checks run parameters against a job's declarations and (de)serializes them for the stores."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from xcron.server.core.errors import InvalidArgument
from xcron.server.core.limits import Limits
from xcron.server.core.model import ParameterSpec, ParameterType, ParameterValue

_PYTHON_TYPES: dict[ParameterType, str] = {
    ParameterType.STRING: "string",
    ParameterType.INT: "int",
    ParameterType.BOOL: "bool",
    ParameterType.DOUBLE: "double",
    ParameterType.TIMESTAMP: "timestamp",
    ParameterType.DURATION: "duration",
}


MAX_DURATION = timedelta(seconds=315_576_000_000, microseconds=999_999)
"""google.protobuf.Duration's range (±10,000 years) at xcron's microsecond precision."""
_MICROSECOND = timedelta(microseconds=1)


def type_of(value: ParameterValue) -> ParameterType:
    """The parameter type a Python value carries (bool before int: bool is an int subclass)."""
    if isinstance(value, bool):
        return ParameterType.BOOL
    if isinstance(value, int):
        return ParameterType.INT
    if isinstance(value, float):
        return ParameterType.DOUBLE
    if isinstance(value, str):
        return ParameterType.STRING
    if isinstance(value, datetime):
        return ParameterType.TIMESTAMP
    if isinstance(value, timedelta):
        return ParameterType.DURATION
    raise TypeError(f"unsupported parameter value {value!r}")


def coerce(spec: ParameterSpec, value: ParameterValue, field: str) -> ParameterValue:
    """The value as the declared type, or InvalidArgument naming the field."""
    actual = type_of(value)
    if actual is spec.type:
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(field, f"parameter {spec.name!r} must be a finite number")
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise InvalidArgument(field, f"parameter {spec.name!r} needs a time zone")
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise InvalidArgument(
                    field, f"parameter {spec.name!r} is outside 0001-01-01 … 9999-12-31 UTC (Timestamp's range)"
                ) from None
        if isinstance(value, timedelta) and abs(value) > MAX_DURATION:
            raise InvalidArgument(
                field, f"parameter {spec.name!r} is outside ±315,576,000,000 seconds (Duration's range)"
            )
        return value
    if spec.type is ParameterType.DOUBLE and isinstance(value, int):
        return float(value)  # widening is safe; the reverse would lose data
    raise InvalidArgument(
        field,
        f"parameter {spec.name!r} is declared {_PYTHON_TYPES[spec.type]} but a {_PYTHON_TYPES[actual]} was given",
    )


def check_size(given: Mapping[str, ParameterValue], limits: Limits, field: str = "parameters") -> None:
    """Refuses oversized parameter sets before anything else looks at them."""
    if len(given) > limits.max_parameters:
        raise InvalidArgument(field, f"{len(given)} parameters given; at most {limits.max_parameters} are accepted")
    for name, value in given.items():
        if isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) > limits.max_parameter_bytes:
            raise InvalidArgument(
                f"{field}.{name}", f"longer than {limits.max_parameter_bytes} bytes (the --max-parameter-bytes limit)"
            )


def bind_parameters(
    specs: Sequence[ParameterSpec], given: Mapping[str, ParameterValue], *, field: str = "parameters"
) -> dict[str, ParameterValue]:
    """Validates named parameters and fills in defaults, in declaration order."""
    by_name = {spec.name: spec for spec in specs}
    for name in given:
        if name not in by_name:
            known = ", ".join(by_name) or "none"
            raise InvalidArgument(f"{field}.{name}", f"unknown parameter {name!r} (declared: {known})")
    bound: dict[str, ParameterValue] = {}
    for spec in specs:
        if spec.name in given:
            bound[spec.name] = coerce(spec, given[spec.name], f"{field}.{spec.name}")
        elif spec.default is not None:
            bound[spec.name] = spec.default
        elif spec.required:
            raise InvalidArgument(f"{field}.{spec.name}", f"required parameter {spec.name!r} is missing")
    return bound


def bind_positional(specs: Sequence[ParameterSpec], values: Sequence[ParameterValue]) -> dict[str, ParameterValue]:
    """Names SanteDB's positional <parameters> after the job's declarations (position i -> spec i)."""
    if len(values) > len(specs):
        raise InvalidArgument("parameters", f"{len(values)} positional parameters given, {len(specs)} declared")
    named: dict[str, ParameterValue] = {}
    for spec, value in zip(specs, values, strict=False):
        if isinstance(value, str) and spec.type is not ParameterType.STRING:
            value = parse_text(spec.type, value, f"parameters.{spec.name}")
        named[spec.name] = value
    return named


def parse_text(kind: ParameterType, text: str, field: str) -> ParameterValue:
    """Reads a value written as text (SanteDB <string> items, tagged JSON)."""
    try:
        match kind:
            case ParameterType.STRING:
                return text
            case ParameterType.INT:
                return int(text)
            case ParameterType.BOOL:
                if text.strip().lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                return text.strip().lower() in ("true", "1")
            case ParameterType.DOUBLE:
                return float(text)
            case ParameterType.TIMESTAMP:
                parsed = datetime.fromisoformat(text)
                if parsed.tzinfo is None:
                    raise ValueError("no time zone")
                return parsed
            case ParameterType.DURATION:
                amount = Decimal(text.strip())
                if not amount.is_finite():
                    raise ValueError("not a finite number")
                micros = (amount * 1_000_000).to_integral_value(rounding=ROUND_DOWN)
                return timedelta(microseconds=int(micros))
    except (ValueError, ArithmeticError, InvalidOperation) as exc:
        raise InvalidArgument(field, f"{text!r} is not a valid {kind.value}: {exc}") from exc
    raise AssertionError(kind)  # pragma: no cover


def format_text(value: ParameterValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        # Exact (a float loses microseconds from about 285 years on): seconds and six decimals.
        micros = value // _MICROSECOND
        whole, fraction = divmod(abs(micros), 1_000_000)
        return f"{'-' if micros < 0 else ''}{whole}.{fraction:06d}"
    return str(value) if not isinstance(value, float) else repr(value)
