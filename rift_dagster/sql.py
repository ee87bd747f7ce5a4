"""`make sql`: a read-only SQL shell on `data/<profile>/rift.duckdb` (views over the pipeline's Parquet).

Read-only sessions never block a run: the pipeline publishes its views by renaming a fresh database
file into place and never opens this one for writing. An open session keeps reading fresh data through
its views; this shell also reopens the catalog when a run publishes a new one, so new tables appear.

    python -m rift_dagster.sql --profile tiny                 # interactive
    python -m rift_dagster.sql --profile tiny -c "SELECT ..."  # one query
"""
import argparse
import sys
from pathlib import Path

import duckdb

HELP = """Tables: {tables}
Statements end with ';'. Commands: .tables, .schema NAME, .quit
Table 1 from the raw labels:   SELECT * FROM buffer_stats;  (or the query in the README)
Every score with its lineage:  SELECT s.model, s.seed, s.benchmark, s.mean_at_k, r.checkpoint_hash,
                               r.buffer_hash, r.base_model_hash FROM scores s JOIN runs r
                               ON r.asset = 'benchmark_scores' AND r.method = s.model AND r.seed = s.seed::VARCHAR;
RIFT against the baselines:    SELECT * FROM comparisons;"""


def connect(db: Path):
    import duckdb

    if not db.exists():
        raise SystemExit(f"{db} does not exist yet: materialise the pipeline first (make demo, or the UI)")
    return duckdb.connect(str(db), read_only=True)


class Session:
    """A read-only connection that follows the catalog file when the pipeline renames a new one in."""

    def __init__(self, db: Path):
        self.db = db
        self.con = connect(db)
        self.inode = db.stat().st_ino

    def sql(self, statement: str):
        inode = self.db.stat().st_ino
        if inode != self.inode:
            self.con.close()
            self.con, self.inode = connect(self.db), inode
        return self.con.sql(statement)


def run(con, statement: str) -> None:
    statement = statement.strip().rstrip(";").strip()
    if not statement:
        return
    if statement == ".tables":
        statement = "SELECT table_name FROM information_schema.tables ORDER BY 1"
    elif statement.startswith(".schema"):
        name = statement.split(maxsplit=1)[1] if " " in statement else ""
        statement = f"DESCRIBE {name}"
    rel = con.sql(statement)
    if rel is not None:
        rel.show(max_rows=200, max_width=200)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("-c", "--command", help="run this SQL and exit")
    args = ap.parse_args(argv)
    db = Path(args.data_dir).resolve() / args.profile / "rift.duckdb"
    con = Session(db)
    if args.command:
        try:
            run(con, args.command)
        except duckdb.Error as e:
            raise SystemExit(f"error: {e}")
        return
    tables = ", ".join(r[0] for r in con.sql("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall())
    print(f"{db} (read-only)\n" + HELP.format(tables=tables or "(none yet)"))
    buf = ""
    while True:
        try:
            line = input("rift> " if not buf else "  ... ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not buf and line.strip() in (".quit", ".exit", "\\q"):
            return
        buf += line + "\n"
        if buf.strip().startswith(".") or buf.rstrip().endswith(";"):
            try:
                run(con, buf)
            except Exception as e:  # a bad query is reported, the session goes on
                print(f"error: {e}", file=sys.stderr)
            buf = ""


if __name__ == "__main__":
    main()
