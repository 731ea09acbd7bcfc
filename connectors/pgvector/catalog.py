"""What PostgreSQL says about a table with pgvector columns, read from pg_catalog, and the SQL that makes
the same table again.

:func:`tables` lists the tables holding a ``vector``, ``halfvec`` or ``sparsevec`` column;
:func:`definition` reads one table's whole definition (columns with their types as ``format_type`` writes
them, nullability, defaults, identity and generated columns, comments; the primary key; the other
constraints; every index not made by a constraint, with its access method, first column and operator
class) into the JSON the manifest keeps (``config.native``); :func:`create_statements` and
:func:`after_data_statements` turn that JSON back into DDL for a table of another name, split as pg_restore
does: the table first, then, after the data, constraints, indexes, comments and sequence positions.
:func:`scalar` and :func:`scalar_row` read the one value or row a statement returns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

#: pgvector's types, by the role their column takes in a bundle.
DENSE_TYPES = ("vector", "halfvec")
SPARSE_TYPE = "sparsevec"
VECTOR_TYPES = (*DENSE_TYPES, SPARSE_TYPE)
#: Operator classes -> neutral distance names (vector_*, halfvec_*, sparsevec_*).
OPCLASS_DISTANCES = {"l2_ops": "l2", "cosine_ops": "cosine", "ip_ops": "ip", "l1_ops": "manhattan"}
DISTANCE_OPCLASS = {"l2": "l2_ops", "cosine": "cosine_ops", "ip": "ip_ops", "manhattan": "l1_ops"}
#: The query operator of each distance (pgvector: ``<->`` l2, ``<=>`` cosine, ``<#>`` negative ip, ``<+>`` l1).
DISTANCE_OPERATOR = {"l2": "<->", "cosine": "<=>", "ip": "<#>", "manhattan": "<+>"}
#: Serial columns are a default of nextval() on a sequence the table owns: the restore writes the serial
#: type, which makes a sequence of its own.
SERIAL_TYPES = {"smallint": "smallserial", "integer": "serial", "bigint": "bigserial"}

TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
  AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s)
  AND EXISTS (
    SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      AND t.typname IN ('vector', 'halfvec', 'sparsevec'))
ORDER BY n.nspname, c.relname
"""

COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, a.atttypmod, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, col_description(a.attrelid, a.attnum),
       t.typcategory
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

PRIMARY_KEY_SQL = """
SELECT con.conname, array_agg(a.attname ORDER BY k.ord)
FROM pg_constraint con
CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
WHERE con.conrelid = %(oid)s AND con.contype = 'p'
GROUP BY con.conname
"""

CONSTRAINTS_SQL = """
SELECT con.conname, con.contype::text, pg_get_constraintdef(con.oid), rn.nspname, rc.relname
FROM pg_constraint con
LEFT JOIN pg_class rc ON rc.oid = con.confrelid
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE con.conrelid = %(oid)s AND con.contype NOT IN ('p', 'n')
ORDER BY con.conname
"""
#: A table a vector table's foreign key references (LangChain's ``langchain_pg_collection``) travels with it,
#: rows and all, when it holds at most this many rows: the restored foreign key then has its rows.
REFERENCE_ROWS = 10_000

INDEXES_SQL = """
SELECT ic.relname, pg_get_indexdef(i.indexrelid), am.amname, pg_get_indexdef(i.indexrelid, 1, true),
       opc.opcname, ic.reloptions
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
LEFT JOIN pg_opclass opc ON opc.oid = i.indclass[0]
WHERE i.indrelid = %(oid)s AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid)
ORDER BY ic.relname
"""


def quote(name: str) -> str:
    """An identifier as SQL (always quoted: names are taken as they are, case and all)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    return f"{quote(schema)}.{quote(table)}"


def scalar_row(conn: Any, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...]:
    """The first row a statement returns (it always returns one)."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return tuple(row)


def scalar(conn: Any, sql: str, params: Sequence[Any] | None = None) -> Any:
    """The first column of the first row a statement returns (it always returns one)."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row[0]


def tables(conn: Any, schema: str | None) -> list[tuple[str, str]]:
    """(schema, table) of every ordinary or partitioned table with a pgvector column (partitions are read
    through their parent), sorted; only `schema` when given."""
    return [(s, t) for s, t in conn.execute(TABLES_SQL, {"schema": schema}).fetchall()]


def definition(conn: Any, schema: str, table: str) -> dict[str, Any]:
    """The table's definition as JSON (see the module docstring)."""
    oid = conn.execute("SELECT %s::regclass::oid", [qualified(schema, table)]).fetchone()[0]
    columns = []
    for name, sql_type, typname, typmod, not_null, default, identity, generated, comment, category in conn.execute(
        COLUMNS_SQL, {"oid": oid}
    ):
        column: dict[str, Any] = {"name": name, "type": sql_type, "base": typname, "not_null": bool(not_null)}
        if typname in VECTOR_TYPES:
            column["dim"] = typmod if typmod > 0 else None
        if category == "A":
            column["array"] = True
        if default is not None:
            column["default"] = default
        if identity:
            column["identity"] = {"a": "always", "d": "by default"}[identity]
        if generated:
            column["generated"] = {"s": "stored", "v": "virtual"}.get(generated, generated)
        if comment is not None:
            column["comment"] = comment
        columns.append(column)
    primary = conn.execute(PRIMARY_KEY_SQL, {"oid": oid}).fetchone()
    constraints = []
    for name, kind, ddl, ref_schema, ref_table in conn.execute(CONSTRAINTS_SQL, {"oid": oid}).fetchall():
        constraint: dict[str, Any] = {"name": name, "type": kind, "definition": ddl}
        if kind == "f":
            constraint["references"] = [ref_schema, ref_table]
        constraints.append(constraint)
    indexes = []
    for name, ddl, method, first, opclass, options in conn.execute(INDEXES_SQL, {"oid": oid}).fetchall():
        index: dict[str, Any] = {"name": name, "definition": ddl, "method": method, "column": first}
        if opclass:
            index["opclass"] = opclass
        if options:
            index["options"] = dict(o.split("=", 1) for o in options)
        indexes.append(index)
    comment, relkind = conn.execute(
        "SELECT obj_description(%s, 'pg_class'), relkind::text FROM pg_class WHERE oid = %s", [oid, oid]
    ).fetchone()
    return {
        "schema": schema,
        "table": table,
        "columns": columns,
        "primary_key": {"name": primary[0], "columns": list(primary[1])} if primary else None,
        "constraints": constraints,
        "indexes": indexes,
        "comment": comment,
        "partitioned": relkind == "p",
    }


def vector_index(native: dict[str, Any], column: str) -> dict[str, Any] | None:
    """The first HNSW or IVFFlat index on `column`, if any."""
    for index in native.get("indexes", ()):
        if index["method"] in ("hnsw", "ivfflat") and index.get("column") in (column, quote(column)):
            return dict(index)
    return None


def opclass_distance(opclass: str | None) -> str | None:
    for suffix, distance in OPCLASS_DISTANCES.items():
        if opclass and opclass.endswith(suffix):
            return distance
    return None


def _renamed(name: str, source_table: str, table: str) -> str:
    """An index or constraint name for the restored table: the same when the table keeps its name,
    else the source table's name in it replaced (index names are unique per schema)."""
    if table == source_table:
        return name
    renamed = table + name[len(source_table) :] if name.startswith(source_table) else f"{table}_{name}"
    return renamed[:63]


def is_serial(column: Mapping[str, Any]) -> bool:
    """A serial column: a default of nextval() on the sequence the table owns (made again by the serial type)."""
    default = column.get("default")
    return default is not None and default.startswith("nextval(") and column["type"] in SERIAL_TYPES


def _column_sql(column: dict[str, Any]) -> str:
    parts = [quote(column["name"])]
    default = column.get("default")
    serial = is_serial(column)
    parts.append(SERIAL_TYPES[column["type"]] if serial else column["type"])
    if column.get("generated"):
        parts.append(f"GENERATED ALWAYS AS ({default}) {'STORED' if column['generated'] == 'stored' else 'VIRTUAL'}")
    elif column.get("identity"):
        parts.append(f"GENERATED {column['identity'].upper()} AS IDENTITY")
    elif default is not None and not serial:
        parts.append(f"DEFAULT {default}")
    if column["not_null"]:
        parts.append("NOT NULL")
    return " ".join(parts)


def create_statement(native: dict[str, Any], schema: str, table: str) -> str:
    """CREATE TABLE for the recorded definition under a new name (no data constraints but the primary
    key: those come after the data, as pg_restore does)."""
    lines = [_column_sql(c) for c in native["columns"]]
    primary = native.get("primary_key")
    if primary:
        name = _renamed(primary["name"], native["table"], table)
        lines.append(f"CONSTRAINT {quote(name)} PRIMARY KEY ({', '.join(map(quote, primary['columns']))})")
    return f"CREATE TABLE {qualified(schema, table)} (\n  " + ",\n  ".join(lines) + "\n)"


INDEX_DDL = re.compile(r"^CREATE (UNIQUE )?INDEX (\S+) ON (ONLY )?(.+?) USING (.*)$", re.DOTALL)


def after_data_statements(native: dict[str, Any], schema: str, table: str) -> tuple[list[str], list[str]]:
    """(statements, notes): constraints, indexes, comments and sequence positions for the restored table,
    to run after its data; notes say what is not recreated (foreign keys: the tables they reference
    are not in the bundle; partitioning)."""
    target = qualified(schema, table)
    statements: list[str] = []
    notes: list[str] = []
    if native.get("partitioned"):
        notes.append(f"{native['table']} was partitioned: restored as one plain table (its partitions are not made)")
    carried = {(r["definition"]["schema"], r["definition"]["table"]) for r in native.get("references", ())}
    for constraint in native.get("constraints", ()):
        if constraint["type"] == "f" and tuple(constraint.get("references") or ()) not in carried:
            notes.append(
                f"foreign key {constraint['name']} of {native['table']} not recreated (the table it references "
                f"is not in the bundle): {constraint['definition']}"
            )
            continue
        name = _renamed(constraint["name"], native["table"], table)
        statements.append(f"ALTER TABLE {target} ADD CONSTRAINT {quote(name)} {constraint['definition']}")
    for index in native.get("indexes", ()):
        match = INDEX_DDL.match(index["definition"])
        if match is None:
            notes.append(f"index {index['name']} not recreated: cannot read its definition")
            continue
        unique, _, _, _, rest = match.groups()
        name = _renamed(index["name"], native["table"], table)
        statements.append(f"CREATE {unique or ''}INDEX {quote(name)} ON {target} USING {rest}")
    if native.get("comment") is not None:
        statements.append(f"COMMENT ON TABLE {target} IS {literal(native['comment'])}")
    for column in native["columns"]:
        if column.get("comment") is not None:
            statements.append(f"COMMENT ON COLUMN {target}.{quote(column['name'])} IS {literal(column['comment'])}")
        default = column.get("default") or ""
        if column.get("identity") or (default.startswith("nextval(") and not column.get("generated")):
            col = quote(column["name"])
            # The sequence continues after the restored rows, as pg_dump's setval does.
            statements.append(
                f"SELECT setval(pg_get_serial_sequence({literal(target)}, {literal(column['name'])}), "
                f"max({col})) FROM {target} HAVING max({col}) IS NOT NULL"
            )
    return statements, notes


def literal(text: str) -> str:
    """A string literal (standard_conforming_strings, on since PostgreSQL 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def overriding(native: Mapping[str, Any]) -> str:
    """`` OVERRIDING SYSTEM VALUE`` for an INSERT of every writable column into a table of `native` with a
    ``GENERATED ALWAYS AS IDENTITY`` column (its values are the restored rows'), else ""."""
    return " OVERRIDING SYSTEM VALUE" if any(c.get("identity") == "always" for c in native["columns"]) else ""


def writable(native: dict[str, Any]) -> list[dict[str, Any]]:
    """The columns a restore writes: all but generated ones (PostgreSQL computes those)."""
    return [c for c in native["columns"] if not c.get("generated")]


def differences(recorded: dict[str, Any], restored: dict[str, Any]) -> list[str]:
    """What differs between a recorded definition and a restored table's, in words (names of indexes and
    constraints aside: a table restored under another name renames them). Foreign keys are not compared
    (never recreated), nor the sequences behind serial columns (the restore makes its own)."""
    out: list[str] = []

    def shape(c: dict[str, Any]) -> tuple[Any, ...]:
        default = c.get("default") or ""
        serial = default.startswith("nextval(")
        return (c["name"], c["type"], c["not_null"], None if serial else default, c.get("identity"), c.get("generated"))

    before = [shape(c) for c in recorded["columns"]]
    after = [shape(c) for c in restored["columns"]]
    if before != after:
        pairs = zip([*before, None], [*after, None], strict=False)
        was, now = next((a, b) for a, b in pairs if a != b)
        out.append(f"column {(was or now or ('?',))[0]} recorded as {was}, restored as {now}")
    keys = [(d.get("primary_key") or {}).get("columns") for d in (recorded, restored)]
    if keys[0] != keys[1]:
        out.append(f"primary key {keys[0]} restored as {keys[1]}")
    constraints = [sorted(c["definition"] for c in d["constraints"] if c["type"] != "f") for d in (recorded, restored)]
    if constraints[0] != constraints[1]:
        out.append(f"constraints {constraints[0]} restored as {constraints[1]}")

    def index_shape(i: dict[str, Any]) -> tuple[Any, ...]:
        return (i["method"], i.get("column"), i.get("opclass"), sorted((i.get("options") or {}).items()))

    indexes = [sorted(map(index_shape, d["indexes"])) for d in (recorded, restored)]
    if indexes[0] != indexes[1]:
        out.append(f"indexes {indexes[0]} restored as {indexes[1]}")
    if recorded.get("comment") != restored.get("comment"):
        out.append("the table's comment differs")
    return out


def referenced_tables(conn: Any, native: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The tables the foreign keys of `native` reference (itself aside) with their definitions and rows
    (each row as PostgreSQL's text of it: exact for every type), read in the caller's snapshot; and notes
    for those left out (more than REFERENCE_ROWS rows)."""
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    seen = {(native["schema"], native["table"])}
    for constraint in native.get("constraints", ()):
        ref = tuple(constraint.get("references") or ())
        if constraint["type"] != "f" or ref in seen or len(ref) != 2:
            continue
        seen.add(ref)
        target = qualified(*ref)
        rows = conn.execute(f"SELECT count(*) FROM {target}").fetchone()[0]
        if rows > REFERENCE_ROWS:
            notes.append(f"{ref[0]}.{ref[1]} (referenced by {native['table']}) holds {rows} rows: not carried")
            continue
        texts = [r[0] for r in conn.execute(f"SELECT t::text FROM {target} t ORDER BY t::text").fetchall()]
        out.append({"definition": definition(conn, *ref), "rows": texts})
    return out, notes


_FOREIGN_KEY = re.compile(r"^FOREIGN KEY \((\w+)\) REFERENCES \S+?\((\w+)\)")
_UNIQUE = re.compile(r"^UNIQUE \(([\w, ]+)\)$")


def colliding_references(conn: Any, native: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Carried referenced rows that the target already holds under another key: {foreign key column: {the
    carried row's key: the key of the target's row with the same unique values}}. langchain-postgres names a
    collection uniquely and keys it by a random uuid: an application's own collection of the bundle's name
    is the one the restored rows belong to (the carried row is left out, ON CONFLICT DO NOTHING). Only
    one-column keys, and the referenced table's single-column-list UNIQUE constraints, are looked at."""
    out: dict[str, dict[str, str]] = {}
    for reference in native.get("references", ()):
        ref = reference["definition"]
        target = qualified(ref["schema"], ref["table"])
        if conn.execute("SELECT to_regclass(%s)", [target]).fetchone()[0] is None:
            continue
        primary = (ref.get("primary_key") or {}).get("columns") or []
        uniques = [
            m.group(1) for c in ref.get("constraints", ()) if c["type"] == "u" and (m := _UNIQUE.match(c["definition"]))
        ]
        if len(primary) != 1 or not uniques:
            continue
        for constraint in native.get("constraints", ()):
            found = _FOREIGN_KEY.match(constraint["definition"]) if constraint["type"] == "f" else None
            if found is None or tuple(constraint.get("references") or ()) != (ref["schema"], ref["table"]):
                continue
            column, key = found.groups()
            if key != primary[0]:
                continue
            for unique in uniques:
                names = [n.strip().strip('"') for n in unique.split(",")]
                same = " AND ".join(f"t.{quote(n)} = (c).{quote(n)}" for n in names)
                rows = conn.execute(
                    f"SELECT (c).{quote(key)}::text, t.{quote(key)}::text FROM (SELECT row_text::{target} AS c "
                    f"FROM unnest(%s::text[]) AS row_text) carried JOIN {target} t ON {same} "
                    f"WHERE t.{quote(key)} IS DISTINCT FROM (c).{quote(key)}",
                    [reference["rows"]],
                ).fetchall()
                out.setdefault(column, {}).update(dict(rows))
    return {column: remap for column, remap in out.items() if remap}


def reference_statements(conn: Any, reference: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """(statement, parameters) that make a carried referenced table and its rows where it is missing, or
    add its missing rows where it exists (rows that collide with a unique key there are left as they are)."""
    ref = reference["definition"]
    target = qualified(ref["schema"], ref["table"])
    statements: list[tuple[str, list[Any]]] = []
    exists = conn.execute("SELECT to_regclass(%s)", [target]).fetchone()[0] is not None
    if not exists:
        statements.append((f"CREATE SCHEMA IF NOT EXISTS {quote(ref['schema'])}", []))
        statements.append((create_statement(ref, ref["schema"], ref["table"]), []))
    names = [quote(c["name"]) for c in writable(ref)]
    statements.append(
        (
            f"INSERT INTO {target} ({', '.join(names)}){overriding(ref)} SELECT {', '.join(f'(r).{n}' for n in names)} "
            f"FROM (SELECT row_text::{target} AS r FROM unnest(%s::text[]) AS row_text) parsed ON CONFLICT DO NOTHING",
            [reference["rows"]],
        )
    )
    if not exists:
        made, _ = after_data_statements(ref, ref["schema"], ref["table"])
        statements += [(statement, []) for statement in made]
    return statements


def unique_values(conn: Any, table: str, column: str) -> bool:
    """Whether every row has a value in `column` and no two the same (then it can be the record id)."""
    sql = f"SELECT count({quote(column)}) = count(*) AND count(DISTINCT {quote(column)}) = count(*) FROM {table}"
    return bool(scalar(conn, sql))
