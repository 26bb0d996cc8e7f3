"""Fixed SQL for the worker API's hot path, with rows turned into model instances as the ORM does.

Why: a worker judgment (``GET trial`` + image + ``POST trial``) runs about a dozen statements.
Compiling each ORM queryset to SQL (``select_related`` joins, ``Q`` trees, ordering, converter
lookup) cost more Python CPU than PostgreSQL spends answering it, and CPU in the web process is
what limits the load benchmark (docs/operations.md, "Load").

Rules kept here:

- Every statement is a constant string built once per (model, database vendor) from the
  model's metadata (table and column names quoted by the backend); every value is a parameter.
- A row becomes an instance through ``Model.from_db`` after the same converters the ORM's
  compiler applies (the backend's ``get_db_converters`` and the field's, e.g. JSON parsing on
  PostgreSQL, booleans and datetimes on SQLite), so it equals the instance the ORM would build.
  Only the columns named are loaded; the others are deferred, as with ``.only()``.
- :func:`insert` writes a new instance the way ``Model.save`` does for an insert (field
  defaults from the constructor, ``pre_save`` for ``auto_now_add``, ``get_db_prep_save``) and
  falls back to ``save()`` whenever the model has ``pre_save``/``post_save`` receivers.
- Locks: :func:`for_update` is ``" FOR UPDATE"`` where the backend has row locks (PostgreSQL),
  empty elsewhere, as ``select_for_update()`` is ignored there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Field, Model, signals

M = TypeVar("M", bound=Model)

Converter = Callable[[Any, Any, Any], Any]


def q(name: str) -> str:
    """A quoted identifier for the current backend."""
    return connection.ops.quote_name(name)


def table(model: type[Model]) -> str:
    return q(model._meta.db_table)


def for_update() -> str:
    """``" FOR UPDATE"`` where ``select_for_update()`` would lock, else ``""``."""
    return " FOR UPDATE" if connection.features.has_select_for_update else ""


def vendor() -> str:
    """The current backend's vendor (a cache key for the SQL built here)."""
    return connection.vendor


@cache
def fields_of(model: type[Model], names: tuple[str, ...] | None = None) -> tuple[Field, ...]:
    """Concrete fields of ``model`` (all, or the primary key and those named), in model order."""
    if names is None:
        return tuple(model._meta.concrete_fields)
    wanted = set(names)
    return tuple(f for f in model._meta.concrete_fields if f.name in wanted or f.attname in wanted or f.primary_key)


def columns(model: type[Model], alias: str, names: tuple[str, ...] | None = None) -> str:
    """``alias."col", ...`` for ``fields_of(model, names)``."""
    return ", ".join(f"{q(alias)}.{q(f.column)}" for f in fields_of(model, names))


@cache
def _shape(vendor: str, model: type[Model], names: tuple[str, ...] | None) -> tuple[int, list[str], tuple[Any, ...]]:
    """``(width, attnames, converters)`` of ``fields_of(model, names)``; converters are
    ``(position, Col, functions)`` for the fields that have any, as ``SQLCompiler.get_converters``
    lists them (the backend's first, then the field's). Keyed by names, not by ``Field``
    objects, whose hashing is slow."""
    fields = fields_of(model, names)
    converters = []
    for index, field in enumerate(fields):
        col = field.get_col(model._meta.db_table)
        found = tuple(connection.ops.get_db_converters(col)) + tuple(field.get_db_converters(connection))
        if found:
            converters.append((index, col, found))
    return len(fields), [f.attname for f in fields], tuple(converters)


def width(model: type[Model], names: tuple[str, ...] | None = None) -> int:
    """How many columns :func:`columns` lists for ``fields_of(model, names)``."""
    return _shape(connections[DEFAULT_DB_ALIAS].vendor, model, names)[0]


def instance(model: type[M], row: Sequence[Any], start: int = 0, names: tuple[str, ...] | None = None) -> M:
    """The instance of ``model`` held in ``row[start:]``, columns as ``fields_of(model, names)``
    (the fields not named are deferred)."""
    db = connections[DEFAULT_DB_ALIAS]
    n, attnames, converters = _shape(db.vendor, model, names)
    values = list(row[start : start + n])
    for index, col, functions in converters:
        value = values[index]
        for function in functions:
            value = function(value, col, db)
        values[index] = value
    return model.from_db(DEFAULT_DB_ALIAS, attnames, values)


def converted(model: type[Model], field_name: str, value: Any) -> Any:
    """One raw column value converted as the ORM would (e.g. a boolean on SQLite)."""
    db = connections[DEFAULT_DB_ALIAS]
    for col, functions in _field_converters(db.vendor, model, field_name):
        for function in functions:
            value = function(value, col, db)
    return value


@cache
def _field_converters(vendor: str, model: type[Model], field_name: str) -> tuple[tuple[Any, tuple[Converter, ...]], ...]:
    field = model._meta.get_field(field_name)
    col = field.get_col(model._meta.db_table)
    found = tuple(connection.ops.get_db_converters(col)) + tuple(field.get_db_converters(connection))
    return ((col, found),) if found else ()


def prep(model: type[Model], field_name: str, value: Any) -> Any:
    """A value as a query parameter for ``model.field_name`` (``get_db_prep_value``)."""
    return model._meta.get_field(field_name).get_db_prep_value(value, connection, prepared=False)


@cache
def _insert_sql(vendor: str, model: type[Model]) -> tuple[tuple[Field, ...], str, bool]:
    meta = model._meta
    fields = tuple(f for f in meta.concrete_fields if not (f.primary_key and f.db_returning))
    returning = connection.features.can_return_columns_from_insert
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {table(model)} ({', '.join(q(f.column) for f in fields)}) VALUES ({placeholders})"
    if returning:
        sql += f" RETURNING {q(meta.pk.column)}"
    return fields, sql, returning


def insert(obj: M) -> M:
    """Insert a new instance (one statement), set its primary key; as ``obj.save()`` would.

    Falls back to ``obj.save()`` when a ``pre_save``/``post_save`` receiver listens to the model.
    """
    model = type(obj)
    if signals.pre_save.has_listeners(model) or signals.post_save.has_listeners(model):
        obj.save()
        return obj
    db = connections[DEFAULT_DB_ALIAS]
    fields, sql, returning = _insert_sql(db.vendor, model)
    params = [f.get_db_prep_save(f.pre_save(obj, True), db) for f in fields]
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        if returning:
            pk = cursor.fetchone()[0]
        else:
            pk = db.ops.last_insert_id(cursor, model._meta.db_table, model._meta.pk.column)
    obj.pk = pk
    obj._state.adding = False
    obj._state.db = DEFAULT_DB_ALIAS
    return obj


@cache
def _with_related_sql(vendor: str, model: type[Model], relation: str, where: tuple[str, ...]) -> str:
    field = model._meta.get_field(relation)
    other = field.related_model
    conditions = " AND ".join(f"a.{q(model._meta.get_field(name).column)} = %s" for name in where)
    return (
        f"SELECT {columns(model, 'a')}, {columns(other, 'b')} FROM {table(model)} a "
        f"INNER JOIN {table(other)} b ON b.{q(other._meta.pk.column)} = a.{q(field.column)} WHERE {conditions}"
    )


def fetch_with_related(model: type[M], relation: str, **where: Any) -> M | None:
    """The one ``model`` row matching ``where`` (field = value, ANDed), with its forward foreign
    key ``relation`` loaded as ``select_related(relation)`` does; ``None`` if there is none.

    The same instances as ``model.objects.select_related(relation).filter(**where).first()``
    for a ``where`` that names a unique row.
    """
    names = tuple(where)
    row = fetchone(_with_related_sql(vendor(), model, relation, names), [where[name] for name in names])
    if row is None:
        return None
    obj = instance(model, row)
    field = model._meta.get_field(relation)
    field.set_cached_value(obj, instance(field.related_model, row, width(model)))
    return obj


def fetchone(sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def fetchall(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def execute(sql: str, params: Sequence[Any]) -> int:
    """Run a write; the number of rows it changed."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
