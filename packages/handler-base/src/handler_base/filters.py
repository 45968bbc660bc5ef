"""The knowledge-base filter: conditions on a chunk's fields, joined with and/or/not.

A filter is part of the contract (``ChatRequest.filter``, ``SearchRequest.filter``), so it
names no backend. Every knowledge store reads the same tree::

    {"field": "doc_id", "op": "eq", "value": "guide"}
    {"and": [{"field": "metadata.lang", "op": "eq", "value": "en"},
             {"not": {"field": "chunk_index", "op": "gte", "value": 3}}]}
    {"or": [{"field": "metadata.tags", "op": "contains", "value": "faq"},
            {"field": "doc_id", "op": "in", "value": ["a", "b"]}]}

Fields: ``id`` (the chunk's id), ``doc_id``, ``chunk_index``, and ``metadata.<key>`` (a
dotted path into the metadata: ``metadata.author.name``). A condition on a metadata key
that a chunk lacks, or holds a value of another type, does not match (``ne`` and
``not_in`` included); ``not`` turns that into a match.

A plain string is also accepted where a filter goes: a Milvus boolean expression,
passed to Milvus as written. Only the Milvus store reads it; other stores answer it
with ``invalid_request``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from handler_base.errors import too_large

MAX_FILTER_CHARS = 2000
"""Characters of a filter: a Milvus expression, or a structured filter as compact JSON."""
MAX_FILTER_DEPTH = 8
"""How deep ``and``/``or``/``not`` may nest."""

RECORD_FIELDS = ("id", "doc_id", "chunk_index")
"""The fields every chunk has; everything else is under ``metadata.``."""
METADATA_PREFIX = "metadata."

Operator = Literal["eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "contains"]
"""``contains``: a metadata list holds the value."""
ORDERING_OPERATORS: frozenset[str] = frozenset({"lt", "lte", "gt", "gte"})
LIST_OPERATORS: frozenset[str] = frozenset({"in", "not_in"})

Scalar = str | int | float | bool
MilvusExpression = Annotated[str, StringConstraints(max_length=MAX_FILTER_CHARS)]


class _Filter(BaseModel):
    # The JSON keys `and`, `or`, `not` are Python keywords: the attributes carry a `_`.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class FieldCondition(_Filter):
    """One comparison of a chunk's field with a value.

    Attributes:
        field: ``id``, ``doc_id``, ``chunk_index`` or ``metadata.<key>[.<key>...]``.
        op: The comparison; ``eq`` by default.
        value: A string, number or boolean; a list of them for ``in`` and ``not_in``.
    """

    field: str
    op: Operator = "eq"
    value: Scalar | Annotated[list[Scalar], Field(min_length=1)]

    @field_validator("field")
    @classmethod
    def _known_field(cls, field: str) -> str:
        if field in RECORD_FIELDS:
            return field
        if field.startswith(METADATA_PREFIX) and all(
            field.removeprefix(METADATA_PREFIX).split(".")
        ):
            return field
        raise ValueError(
            f"unknown filter field {field!r}: use {', '.join(RECORD_FIELDS)} "
            "or metadata.<key> (dots go into nested objects)"
        )

    @field_validator("value")
    @classmethod
    def _value_fits_op(
        cls, value: Scalar | list[Scalar], info: ValidationInfo
    ) -> Scalar | list[Scalar]:
        op = info.data.get("op", "eq")
        if (op in LIST_OPERATORS) != isinstance(value, list):
            need = "a list of values" if op in LIST_OPERATORS else "one value, not a list"
            raise ValueError(f"operator {op!r} takes {need}")
        if op in ORDERING_OPERATORS and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise ValueError(f"operator {op!r} compares numbers; got {type(value).__name__}")
        return value

    @property
    def metadata_path(self) -> list[str] | None:
        """The keys into the metadata, or None for a record field."""
        if self.field in RECORD_FIELDS:
            return None
        return self.field.removeprefix(METADATA_PREFIX).split(".")


class AllOf(_Filter):
    """Every filter matches (``{"and": [...]}``)."""

    all_: Annotated[list[Filter], Field(alias="and", min_length=1)]


class AnyOf(_Filter):
    """At least one filter matches (``{"or": [...]}``)."""

    any_: Annotated[list[Filter], Field(alias="or", min_length=1)]


class Not(_Filter):
    """The filter does not match (``{"not": {...}}``)."""

    not_: Filter = Field(alias="not")


Filter = FieldCondition | AllOf | AnyOf | Not
"""A structured filter: a condition, or conditions joined with and/or/not."""

for _model in (AllOf, AnyOf, Not):
    _model.model_rebuild()


def depth(filter: Filter) -> int:
    """How many levels of ``and``/``or``/``not`` hold the filter's conditions."""
    if isinstance(filter, AllOf):
        return 1 + max(depth(f) for f in filter.all_)
    if isinstance(filter, AnyOf):
        return 1 + max(depth(f) for f in filter.any_)
    if isinstance(filter, Not):
        return 1 + depth(filter.not_)
    return 0


def _within_limits(value: Filter) -> Filter:
    if depth(value) > MAX_FILTER_DEPTH:
        raise ValueError(f"the filter nests deeper than {MAX_FILTER_DEPTH} levels")
    size = len(value.model_dump_json())
    if size > MAX_FILTER_CHARS:
        raise too_large(
            "the filter is {size} characters as JSON, over the limit of {limit}",
            size=size,
            limit=MAX_FILTER_CHARS,
        )
    return value


KnowledgeFilter = Annotated[Filter, AfterValidator(_within_limits)] | MilvusExpression
"""What a request may give as its filter: a structured :data:`Filter`, or (Milvus only) a
Milvus boolean expression."""
