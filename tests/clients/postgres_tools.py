"""pgcli, SQLAlchemy's reflection, pandas, psycopg's cursors and COPY, and asyncpg against
`imageql serve`, each as its users run it. Prints one JSON object: each check's answer, or
{"error": SQLSTATE or exception name, "message": …} where it failed."""

import asyncio
import json
import os
import sys

import asyncpg
import pandas
import psycopg
import sqlalchemy
from pgcli.pgexecute import PGExecute
from pgspecial.main import PGSpecial

url = os.environ["IMAGEQL_URL"]
password = os.environ["IMAGEQL_PASSWORD"]
report = {}


def check(name, run):
    try:
        report[name] = run()
    except Exception as e:  # every failure is part of the report
        code = getattr(e, "sqlstate", None) or getattr(getattr(e, "orig", None), "sqlstate", None)
        report[name] = {"error": code or type(e).__name__, "message": str(e).splitlines()[0]}


def pgcli():
    """What pgcli's completion refresher and its special commands ask."""
    executor = PGExecute(dsn=url.replace("://reporter@", f"://reporter:{password}@"))
    check("pgcli_schemata", lambda: sorted(executor.schemata()))
    check("pgcli_tables", lambda: sorted(list(t) for t in executor.tables()))
    check("pgcli_views", lambda: sorted(list(v) for v in executor.views()))
    check("pgcli_table_columns", lambda: len(list(executor.table_columns())))
    check("pgcli_view_columns", lambda: len(list(executor.view_columns())))
    check("pgcli_functions", lambda: len(list(executor.functions())))
    check("pgcli_datatypes", lambda: len(list(executor.datatypes())))
    check("pgcli_foreignkeys", lambda: len(list(executor.foreignkeys())))
    check("pgcli_databases", lambda: executor.databases())
    check("pgcli_casing", lambda: len(list(executor.casing())))
    check("pgcli_search_path", lambda: executor.search_path())
    special = PGSpecial()
    for command in ["\\dt images.*", "\\d images.images", "\\df", "\\dT", "\\du", "\\dn", "\\l", "\\dv"]:

        def run(command=command):
            results = list(executor.run(command, pgspecial=special))
            return [[list(row) for row in rows or []] for _, rows, *_ in results]

        check("pgcli_run " + command, run)


def sqlalchemy_reflection():
    engine = sqlalchemy.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://"), connect_args={"password": password}
    )
    inspector = sqlalchemy.inspect(engine)
    check("sa_version", lambda: sqlalchemy.__version__)
    check("sa_schema_names", lambda: sorted(inspector.get_schema_names()))
    check("sa_table_names", lambda: sorted(inspector.get_table_names(schema="images")))
    check("sa_view_names", lambda: sorted(inspector.get_view_names(schema="images")))
    check(
        "sa_columns",
        lambda: [[c["name"], str(c["type"]), c["nullable"]] for c in inspector.get_columns("images", schema="images")],
    )
    check("sa_pk_constraint", lambda: inspector.get_pk_constraint("images", schema="images")["constrained_columns"])
    check("sa_foreign_keys", lambda: inspector.get_foreign_keys("images", schema="images"))
    check("sa_indexes", lambda: inspector.get_indexes("images", schema="images"))
    check("sa_unique_constraints", lambda: inspector.get_unique_constraints("images", schema="images"))
    check("sa_check_constraints", lambda: inspector.get_check_constraints("images", schema="images"))
    check("sa_table_comment", lambda: inspector.get_table_comment("images", schema="images")["text"])
    check(
        "sa_autoload",
        lambda: [c.name for c in sqlalchemy.Table("images", sqlalchemy.MetaData(), schema="images", autoload_with=engine).columns],
    )

    def select_through_the_reflected_table():
        table = sqlalchemy.Table("images", sqlalchemy.MetaData(), schema="images", autoload_with=engine)
        query = sqlalchemy.select(table.c.id).where(table.c.size > 2000).order_by(table.c.id)
        with engine.connect() as connection:
            return [row.id for row in connection.execute(query)]

    check("sa_reflected_select", select_through_the_reflected_table)

    def streamed():
        with engine.connect() as connection:
            rows = connection.execution_options(stream_results=True, max_row_buffer=3).execute(
                sqlalchemy.text("SELECT id FROM images.images WHERE NOT is_public ORDER BY id")
            )
            return [row.id for row in rows]

    check("sa_stream_results", streamed)
    check("pandas_version", lambda: pandas.__version__)

    def whole_table():
        frame = pandas.read_sql_table("images", engine, schema="images")
        return {"rows": len(frame), "columns": list(frame.columns)}

    check("pandas_read_sql_table", whole_table)
    check(
        "pandas_read_sql_params",
        lambda: pandas.read_sql(
            sqlalchemy.text("SELECT id FROM images.images WHERE size > :size ORDER BY id"), engine, params={"size": 2000}
        )["id"].tolist(),
    )
    check(
        "pandas_to_sql",
        lambda: pandas.DataFrame({"a": [1, 2]}).to_sql("scratch", engine, index=False),
    )


def psycopg_cursors_and_copy():
    with psycopg.connect(url, password=password) as connection:
        def named_cursor():
            with connection.cursor(name="pages") as cursor:
                cursor.execute("SELECT id FROM images.images WHERE NOT is_public ORDER BY id")
                first = [row[0] for row in cursor.fetchmany(4)]
                rest = [row[0] for row in cursor.fetchall()]
            connection.commit()
            return {"first": first, "rest": rest}

        check("named_cursor", named_cursor)

        def declared():
            connection.execute("DECLARE c CURSOR FOR SELECT id FROM images.images WHERE NOT is_public ORDER BY id")
            two = [row[0] for row in connection.execute("FETCH 2 FROM c").fetchall()]
            moved = [row[0] for row in connection.execute("FETCH NEXT FROM c").fetchall()]
            rest = [row[0] for row in connection.execute("FETCH ALL FROM c").fetchall()]
            connection.execute("CLOSE c")
            connection.commit()
            return {"two": two, "next": moved, "rest": rest}

        check("declared_cursor", declared)

        def copy_text():
            with connection.cursor() as cursor:
                with cursor.copy("COPY (SELECT id, size, tags FROM images.images WHERE NOT is_public ORDER BY id) TO STDOUT") as copy:
                    return [bytes(block).decode() for block in copy]

        check("copy_text", lambda: "".join(copy_text()))

        def copy_csv():
            with connection.cursor() as cursor:
                with cursor.copy(
                    "COPY (SELECT id, label FROM images.images WHERE NOT is_public ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)"
                ) as copy:
                    return "".join(bytes(block).decode() for block in copy)

        check("copy_csv", copy_csv)

        def copy_from():
            with connection.cursor() as cursor:
                with cursor.copy("COPY linode.images.images FROM STDIN") as copy:
                    copy.write("x\n")

        check("copy_from", copy_from)
        connection.rollback()


def records():
    """Records and arrays of records read the same in the text and the binary format."""
    query = "SELECT id, image_sharing, regions FROM images.images WHERE NOT is_public ORDER BY id"
    with psycopg.connect(url, password=password) as connection:
        for binary in (False, True):
            rows = connection.cursor(binary=binary).execute(query).fetchall()
            report["binary" if binary else "text"] = [[r[0], list(r[1]) if r[1] else None, r[2]] for r in rows]


async def asyncpg_binary():
    """asyncpg: the binary protocol throughout, and the types it looks up in the catalog."""
    connection = await asyncpg.connect(url, password=password)
    try:
        async def run(name, work):
            try:
                report[name] = await work()
            except Exception as e:  # every failure is part of the report
                report[name] = {"error": getattr(e, "sqlstate", None) or type(e).__name__, "message": str(e)}

        report["asyncpg_version"] = asyncpg.__version__
        await run("one", lambda: connection.fetchval("SELECT 1"))
        await run(
            "above",
            lambda: _ids(connection.fetch("SELECT id FROM images.images WHERE size > $1 ORDER BY id", 2000)),
        )
        await run("any", lambda: _ids(connection.fetch("SELECT id FROM images.images WHERE id = ANY($1) ORDER BY id", ["private/1001", "private/1002"])))

        async def whole_rows():
            rows = await connection.fetch("SELECT * FROM images.images WHERE NOT is_public ORDER BY id")
            return [[r["id"], r["tags"], r["created"].isoformat(), [list(x) for x in r["regions"] or []]] for r in rows]

        await run("rows", whole_rows)

        async def cursor():
            async with connection.transaction():
                return [r["id"] async for r in connection.cursor("SELECT id FROM images.images WHERE NOT is_public ORDER BY id", prefetch=3)]

        await run("cursor", cursor)
        await run("syntax", lambda: connection.fetch("SELEC 1"))
    finally:
        await connection.close()


async def _ids(rows):
    return [r["id"] for r in await rows]


parts = {
    "pgcli": pgcli,
    "sqlalchemy": sqlalchemy_reflection,
    "psycopg": psycopg_cursors_and_copy,
    "records": records,
    "asyncpg": lambda: asyncio.run(asyncpg_binary()),
}
parts[sys.argv[1]]()
print(json.dumps(report, default=str))
