"""How stores keep parameter values: each as [type, text], so a value reads back with its type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from xcron.server.core.model import ParameterType, ParameterValue
from xcron.server.core.params import format_text, parse_text, type_of


def encode_parameters(values: Mapping[str, ParameterValue]) -> dict[str, list[str]]:
    """A JSON-safe, type-tagged form for the state store."""
    return {name: [type_of(v).value, format_text(v)] for name, v in values.items()}


def decode_parameters(data: Mapping[str, Sequence[str]]) -> dict[str, ParameterValue]:
    return {name: parse_text(ParameterType(kind), text, name) for name, (kind, text) in data.items()}
