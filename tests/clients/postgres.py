"""psycopg 3 and SQLAlchemy against `imageql serve`: parameterised queries through the
extended protocol, typed values, and the inspector BI tools use. Prints one JSON object."""

import datetime
import json
import os

import psycopg
import sqlalchemy

url = os.environ["IMAGEQL_URL"]
password = os.environ["IMAGEQL_PASSWORD"]

report = {}
with psycopg.connect(url, password=password) as conn:
    rows = conn.execute(
        "SELECT id FROM linode.images.images WHERE NOT is_public AND size > %s ORDER BY id", (2000,)
    ).fetchall()
    report["large"] = [r[0] for r in rows]
    ids = report["large"][:2]
    rows = conn.execute("SELECT id, tags, created FROM linode.images.images WHERE id = ANY(%s)", (ids,)).fetchall()
    report["any_ids"] = sorted(r[0] for r in rows)
    report["tags_are_lists"] = all(isinstance(r[1], list) for r in rows)
    report["created_is_datetime"] = all(isinstance(r[2], datetime.datetime) for r in rows)
    # A table function's datetime arguments as drivers bind them: datetime, aware datetime,
    # date, text; in text and in binary.
    month = datetime.datetime(2026, 12, 1)
    arguments = [month, month.replace(tzinfo=datetime.timezone.utc), month.date(), "2026-12-01"]
    query = "SELECT count(*) FROM linode.images.usage(%s, %s)"
    report["usage_counts"] = [
        conn.cursor(binary=binary).execute(query, (start, month + datetime.timedelta(days=1))).fetchone()[0]
        for start in arguments
        for binary in (False, True)
    ]

engine = sqlalchemy.create_engine(
    url.replace("postgresql://", "postgresql+psycopg://"), connect_args={"password": password}
)
inspector = sqlalchemy.inspect(engine)
report["tables"] = inspector.get_table_names(schema="images")
report["columns"] = [c["name"] for c in inspector.get_columns("images", schema="images")]
print(json.dumps(report))
