"""Keep a runs folder's results beyond its machine: ``pg_dump`` of the runs folder's own
PostgreSQL (MLflow's runs and Optuna's studies) and ``pg_restore`` into another runs folder.

A cloud head node's disk goes with ``ray down``; a copy of PostgreSQL's live data folder is not
a backup (the server writes it while it runs). The dumps are: one file per database,
``<out>/mlflow.dump`` and ``<out>/optuna.dump`` (PostgreSQL's custom format, compressed),
written under a temporary name and renamed, so a dump interrupted half-way never replaces the
last good one. MLflow's artifacts are files (``<runs>/mlflow/artifacts``, or a bucket): copy
them beside the dumps.

Restoring fills the databases of a runs folder that holds no results yet (a new
``--runs-dir``): its PostgreSQL is created and started, and the next ``study.server start``
there serves the restored runs (``--resume`` and re-studies continue from Optuna's studies).
"""

from __future__ import annotations

from pathlib import Path

from study.tracking._postgres import (
    DATABASES,
    DB_USER,
    PostgresError,
    _run,
    bin_dir,
    drop_postgres,
    ensure_postgres,
    has_postgres,
)


def _client_args(runs_dir: Path, timeout_s: float) -> list[str]:
    """Connection options of the runs folder's PostgreSQL (started if stopped)."""
    info = ensure_postgres(runs_dir, timeout_s=timeout_s)
    return ["-h", str(info.socket_dir), "-p", str(info.port), "-U", DB_USER]


def dump_postgres(runs_dir: Path, out_dir: Path | None = None,
                  timeout_s: float = 600.0) -> list[Path]:
    """Dump the runs folder's databases (started if stopped) to ``out_dir`` (default
    ``<runs>/dumps``); returns the files written.

    Raises:
        PostgresError: the runs folder has no PostgreSQL of its own, or ``pg_dump`` failed.
    """
    runs_dir = Path(runs_dir)
    if not has_postgres(runs_dir):
        raise PostgresError(
            f"{runs_dir} has no PostgreSQL of its own (its store is SQLite: copy "
            f"{runs_dir / 'mlflow' / 'mlflow.db'} and each study's optuna.db instead)")
    out = Path(out_dir) if out_dir is not None else runs_dir / "dumps"
    out.mkdir(parents=True, exist_ok=True)
    conn = _client_args(runs_dir, timeout_s)
    written = []
    for db in DATABASES:
        final = out / f"{db}.dump"
        partial = out / f".{db}.dump.partial"
        _run([str(bin_dir() / "pg_dump"), *conn, "-Fc", "-f", str(partial), db],
             f"pg_dump {db}", timeout_s)
        partial.replace(final)
        written.append(final)
    return written


def _has_tables(conn: list[str], db: str) -> bool:
    out = _run([str(bin_dir() / "psql"), *conn, "-d", db, "-tAc",
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"],
               f"psql {db}", 60)
    return int(out.strip() or 0) > 0


def restore_postgres(runs_dir: Path, dump_dir: Path, timeout_s: float = 600.0) -> list[str]:
    """Restore ``dump_dir``'s ``mlflow.dump`` / ``optuna.dump`` into the runs folder's own
    PostgreSQL (created and started if needed); returns the databases restored.

    All or nothing: each database is restored in one transaction, and when one fails the
    ones restored before it are emptied again and a PostgreSQL made for this restore is
    removed, so the same command can be run again once the dump is mended.

    Raises:
        PostgresError: a dump is missing, the runs folder's databases already hold results
            (restore into a new runs folder), or ``pg_restore`` failed (nothing restored).
    """
    dumps = {db: Path(dump_dir) / f"{db}.dump" for db in DATABASES}
    missing = [str(p) for p in dumps.values() if not p.is_file()]
    if missing:
        raise PostgresError(f"no dump at {', '.join(missing)} (made by python -m study.server "
                            "dump)")
    runs_dir = Path(runs_dir)
    made_here = not has_postgres(runs_dir)
    conn = _client_args(runs_dir, timeout_s)
    full = [db for db in DATABASES if _has_tables(conn, db)]
    if full:
        raise PostgresError(f"{runs_dir}'s PostgreSQL already holds results ({', '.join(full)}):"
                            " restore into a new runs folder (--runs-dir)")
    done: list[str] = []
    try:
        for db, path in dumps.items():
            _run([str(bin_dir() / "pg_restore"), *conn, "-d", db, "--no-owner",
                  "--exit-on-error", "--single-transaction", str(path)],
                 f"pg_restore {path}", timeout_s)
            done.append(db)
    except PostgresError as e:
        if made_here:
            drop_postgres(runs_dir, timeout_s)
            left = f"the PostgreSQL made for it in {runs_dir} was removed again"
        else:
            _empty(conn, done, timeout_s)
            left = f"{runs_dir}'s databases are empty again"
        raise PostgresError(f"{e}\nnothing was restored ({left}): mend or re-make the dump, "
                            "then run the same command again") from None
    return done


def _empty(conn: list[str], databases: list[str], timeout_s: float) -> None:
    """Drop and re-create ``databases`` (restored by a restore that then failed)."""
    for db in databases:
        _run([str(bin_dir() / "psql"), *conn, "-d", "postgres", "-v", "ON_ERROR_STOP=1",
              "-c", f'DROP DATABASE "{db}"', "-c", f'CREATE DATABASE "{db}"'],
             f"psql: empty {db}", timeout_s)
