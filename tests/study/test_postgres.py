"""The runs folder's own PostgreSQL (Debian's initdb + pg_ctl), the MLflow server on it with
several workers, and Optuna on the same database server: real processes, no mocks."""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from study.server import (
    ServerInfo,
    capacity_warning,
    ensure_server,
    server_status,
    stop_server,
    workers_for,
)
from study.tracking import RunLogger, client_for, experiment_for, start_parent_run
from study.tracking import _postgres as pg

try:
    pg.bin_dir()
    HAVE_PG = True
except pg.PostgresError:
    HAVE_PG = False
needs_pg = pytest.mark.skipif(not HAVE_PG, reason="Debian's postgresql package is not "
                              "installed (make postgresql)")


@pytest.fixture
def runs() -> Iterator[Path]:
    """A runs folder the unprivileged 'postgres' user can reach when we are root (pytest's
    tmp_path sits under a 0700 folder); servers started in it are stopped at the end."""
    folder = Path(tempfile.mkdtemp(prefix="tlstudy-pg-test-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        stop_server(folder)
        pg.stop_postgres(folder)
        shutil.rmtree(folder, ignore_errors=True)


@needs_pg
def test_postgres_starts_reuses_restarts_and_keeps_data(runs: Path) -> None:
    first = pg.ensure_postgres(runs)
    assert not first.reused and pg.has_postgres(runs)
    assert (first.data_dir.stat().st_mode & 0o777) == 0o700
    assert (first.socket_dir.stat().st_mode & 0o777) == 0o700
    engine = sa.create_engine(first.url("optuna"))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE kept (v int)"))
        conn.execute(sa.text("INSERT INTO kept VALUES (42)"))
    engine.dispose()
    again = pg.ensure_postgres(runs)
    assert again.reused and again.pid == first.pid
    assert pg.stop_postgres(runs) is True
    assert pg.postgres_status(runs) is None and pg.stop_postgres(runs) is False
    restarted = pg.ensure_postgres(runs)
    assert not restarted.reused and restarted.pid != first.pid
    engine = sa.create_engine(restarted.url("optuna"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT v FROM kept")).scalar() == 42
    engine.dispose()
    if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as the service user
        assert first.data_dir.stat().st_uid != 0


@pytest.fixture
def pg_server(runs: Path) -> ServerInfo:
    """An MLflow server with 2 workers on the runs folder's PostgreSQL, with one logged run."""
    info = ensure_server(runs, backend="postgres", workers=2, timeout_s=180)
    client = client_for(info.url)
    run_id = start_parent_run(client, experiment_for(client, "pg-study"))
    log = RunLogger(info.url, run_id)
    for epoch in range(1, 4):
        log.metrics(epoch, {"val_auc": epoch / 10})
    assert log.finish() is True
    return info


@needs_pg
def test_mlflow_server_and_optuna_share_the_folders_postgres(runs: Path,
                                                             pg_server: ServerInfo) -> None:
    """The server logs into the folder's PostgreSQL with 2 workers; Optuna's storage for a
    study of the folder is the same PostgreSQL."""
    assert pg_server.store == "postgres" and pg_server.workers == 2
    assert pg_server.backend_uri == pg.postgres_status(runs).url("mlflow")  # type: ignore[union-attr]
    client = client_for(pg_server.url)
    (run,) = client.search_runs([experiment_for(client, "pg-study")])
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_auc")) == [
        1, 2, 3]
    url = pg.optuna_storage_url(runs / "pg-study")
    assert url == pg.postgres_status(runs).url("optuna")  # type: ignore[union-attr]
    study = optuna.create_study(storage=url, study_name="pg-study/FT/split0")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    reopened = optuna.load_study(storage=url, study_name="pg-study/FT/split0")
    assert len(reopened.trials) == 3


@needs_pg
def test_the_trial_logger_keeps_epochs_logged_while_postgres_restarts(
        runs: Path, pg_server: ServerInfo) -> None:
    """The MLflow server answers 503 (TEMPORARILY_UNAVAILABLE) while its PostgreSQL is down:
    the trial logger keeps those epochs and delivers them once it is back, each once."""
    client = client_for(pg_server.url)
    run_id = start_parent_run(client, experiment_for(client, "pg-restart"))
    log = RunLogger(pg_server.url, run_id)
    log.metrics(1, {"val_loss": 1.0})
    assert log.flush(wait_s=30)
    pg.stop_postgres(runs)
    for epoch in (2, 3):                       # trained while the database is down
        log.metrics(epoch, {"val_loss": 1.0 / epoch})
    assert not log.flush(wait_s=2) and log.pending["metrics"] == 2
    pg.ensure_postgres(runs)
    log.metrics(4, {"val_loss": 0.25})
    assert log.finish(wait_s=120) is True
    run = client.get_run(run_id)
    assert [m.step for m in sorted(client.get_metric_history(run_id, "val_loss"),
                                   key=lambda m: m.step)] == [1, 2, 3, 4]
    assert run.info.status == "FINISHED" and "logging_errors" not in run.data.tags


@needs_pg
@pytest.mark.slow
def test_stopped_server_and_postgres_come_back_with_the_runs(runs: Path,
                                                             pg_server: ServerInfo) -> None:
    """After both are stopped, a plain ``ensure_server`` (no options) comes back on the
    folder's PostgreSQL with its 2 workers, and the run is there (about 70 s)."""
    stop_server(runs)
    pg.stop_postgres(runs)
    again = ensure_server(runs, timeout_s=180)
    assert again.store == "postgres" and again.workers == 2 and not again.reused
    client = client_for(again.url)
    (run,) = client.search_runs([experiment_for(client, "pg-study")])
    assert len(client.get_metric_history(run.info.run_id, "val_auc")) == 3


@needs_pg
def test_the_searchers_optuna_storage_waits_out_a_postgres_restart(runs: Path) -> None:
    """Optuna's own RDBStorage fails the first call after PostgreSQL restarts (stale pooled
    connections); the searcher's storage checks connections before use and retries a call that
    meets the database down: every trial stored once, data errors still raised at once."""
    import threading

    from study.phases._storage import ResilientRDBStorage, optuna_storage

    url = pg.ensure_postgres(runs).url("optuna")
    storage = optuna_storage(url)
    assert isinstance(storage, ResilientRDBStorage)
    study = optuna.create_study(storage=storage, study_name="restart")
    study.tell(study.ask(), 1.0)
    pg.stop_postgres(runs)
    pg.ensure_postgres(runs)                       # restarted between two calls
    study.tell(study.ask(), 2.0)
    pg.stop_postgres(runs)                         # down while the call is made
    threading.Timer(2.0, pg.ensure_postgres, args=(runs,)).start()
    trial = study.ask()
    study.tell(trial, 3.0)
    assert [t.value for t in optuna.load_study(storage=url, study_name="restart").trials] == [
        1.0, 2.0, 3.0]
    with pytest.raises(ValueError):                # a finished trial: not retried
        study.tell(trial, 4.0)
    assert optuna_storage("sqlite:////x/optuna.db") == "sqlite:////x/optuna.db"


def _lost_answer_on_trial_creation(monkeypatch: pytest.MonkeyPatch, base: type) -> type:
    """``base`` whose next trial creation is committed and then meets the connection lost
    before the answer (the commit's ambiguous window), as Optuna sees it."""
    import contextlib

    import sqlalchemy.exc as sa_exc
    from optuna.exceptions import StorageInternalError
    from optuna.storages._rdb import storage as rdb

    fault = {"creating": False, "left": 1}

    class Storage(base):  # type: ignore[misc, valid-type]
        def _get_prepared_new_trial(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            fault["creating"] = True
            return super()._get_prepared_new_trial(*args, **kwargs)

    real = rdb._create_scoped_session

    @contextlib.contextmanager
    def session(*args, **kwargs):  # type: ignore[no-untyped-def]
        fault["creating"] = False
        with real(*args, **kwargs) as s:
            yield s
        if fault["creating"] and fault["left"]:     # committed: now the answer is lost
            fault["left"] -= 1
            lost = sa_exc.OperationalError("COMMIT", {}, Exception(
                "server closed the connection unexpectedly"))
            raise StorageInternalError("An exception is raised during the commit.") from lost

    monkeypatch.setattr(rdb, "_create_scoped_session", session)
    return Storage


@needs_pg
def test_a_trial_creation_whose_answer_was_lost_creates_one_trial(
        runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit reached PostgreSQL, its answer did not: Optuna tries the creation again.
    Its own storage then makes a second trial; the searcher's storage finds the first by its
    creation key and returns it."""
    from optuna.storages import RDBStorage

    from study.phases._storage import CREATE_KEY, ResilientRDBStorage

    url = pg.ensure_postgres(runs).url("optuna")
    counts = {}
    for name, base in (("optuna", RDBStorage), ("ours", ResilientRDBStorage)):
        storage = _lost_answer_on_trial_creation(monkeypatch, base)(url)
        study = optuna.create_study(storage=storage, study_name=f"lost-{name}")
        trial = study.ask()
        study.tell(trial, 1.0)
        trials = optuna.load_study(storage=url, study_name=f"lost-{name}").trials
        counts[name] = len(trials)
        if name == "ours":
            assert trial.number == 0 and [t.state for t in trials] == [
                optuna.trial.TrialState.COMPLETE]
            assert len(trials[0].system_attrs[CREATE_KEY]) == 32
            assert study.ask().number == 1                    # and on it goes
    assert counts == {"optuna": 2, "ours": 1}   # the fault is real: Optuna's own made two


@needs_pg
@pytest.mark.slow
def test_dump_then_restore_into_a_new_runs_folder(runs: Path, pg_server: ServerInfo) -> None:
    """What keeps a cluster head's results beyond ``ray down``: ``study.server dump`` on the
    head, ``study.server restore`` into a new runs folder elsewhere; its server then serves the
    same run and history, Optuna's study is there, and a second restore there is refused."""
    import subprocess
    import sys

    url = pg.optuna_storage_url(runs / "pg-study")
    study = optuna.create_study(storage=url, study_name="pg-study/FT/split0")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    cli = [sys.executable, "-m", "study.server"]
    done = subprocess.run([*cli, "dump", "--runs-dir", str(runs)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    dumps = runs / "dumps"
    assert sorted(p.name for p in dumps.iterdir()) == ["mlflow.dump", "optuna.dump"]
    new = runs / "restored"   # (a folder of its own, reachable by the service user)
    # a damaged dump first: named, nothing restored, the new folder left without PostgreSQL
    damaged = runs / "damaged"
    damaged.mkdir()
    shutil.copy(dumps / "mlflow.dump", damaged / "mlflow.dump")       # restored, then undone
    data = (dumps / "optuna.dump").read_bytes()
    (damaged / "optuna.dump").write_bytes(data[: len(data) // 2])
    bad = subprocess.run([*cli, "restore", "--runs-dir", str(new), str(damaged)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and str(damaged / "optuna.dump") in bad.stderr, bad.stderr
    assert "nothing was restored" in bad.stderr
    assert not pg.has_postgres(new) and pg.postgres_status(new) is None
    done = subprocess.run([*cli, "restore", "--runs-dir", str(new), str(dumps)],
                          capture_output=True, text=True, timeout=300)
    try:
        assert done.returncode == 0, done.stderr
        again = ensure_server(new, timeout_s=180)
        assert again.store == "postgres"
        client = client_for(again.url)
        (run,) = client.search_runs([experiment_for(client, "pg-study")])
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_auc")
                      ) == [1, 2, 3]
        restored = optuna.load_study(storage=pg.optuna_storage_url(new / "pg-study"),
                                     study_name="pg-study/FT/split0")
        assert [t.params for t in restored.trials] == [t.params for t in study.trials]
        twice = subprocess.run([*cli, "restore", "--runs-dir", str(new), str(dumps)],
                               capture_output=True, text=True, timeout=300)
        assert twice.returncode == 1 and "already holds results" in twice.stderr
    finally:
        stop_server(new)
        pg.stop_postgres(new)


@needs_pg
def test_a_study_begun_on_sqlite_keeps_its_optuna_database(runs: Path) -> None:
    study_dir = runs / "old-study"
    study_dir.mkdir()
    (study_dir / "optuna.db").touch()
    pg.ensure_postgres(runs)
    assert pg.optuna_storage_url(study_dir) == f"sqlite:///{study_dir / 'optuna.db'}"


def test_without_postgres_optuna_stays_on_sqlite(tmp_path: Path) -> None:
    assert pg.optuna_storage_url(tmp_path / "s") == f"sqlite:///{tmp_path / 's' / 'optuna.db'}"


def test_missing_binaries_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TLSTUDY_PG_BIN", str(tmp_path))
    with pytest.raises(pg.PostgresError, match="holds no initdb"):
        pg.ensure_postgres(tmp_path)


@needs_pg
@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to another user")
def test_as_root_a_runs_folder_the_service_user_cannot_enter_still_gets_its_postgres(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """pytest's tmp_path lies under a 0700 folder the 'postgres' user cannot enter: the
    database goes to that user's home, linked from ``<runs>/postgres/data``, said in a warning;
    it is found again after a stop, and dropped with the runs folder."""
    runs = tmp_path / "runs"
    try:
        first = pg.ensure_postgres(runs)
        link = runs / "postgres" / "data"
        assert link.is_symlink() and link.resolve() == first.data_dir
        home = first.data_dir.parent
        assert home.parent == Path(pwd.getpwnam("postgres").pw_dir) / "tlstudy"
        assert (home.stat().st_mode & 0o777) == 0o700 and home.stat().st_uid != 0
        assert first.log_path.parent == home and first.socket_dir.parent == home
        assert pg.has_postgres(runs)
        warning = " ".join(r.getMessage() for r in caplog.records)
        assert "cannot enter" in warning and str(home) in warning and "chmod o+x" in warning
        engine = sa.create_engine(first.url("mlflow"))
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE kept (v int)"))
            conn.execute(sa.text("INSERT INTO kept VALUES (7)"))
        engine.dispose()
        assert pg.stop_postgres(runs)
        again = pg.ensure_postgres(runs)
        assert again.data_dir == first.data_dir and again.socket_dir == first.socket_dir
        engine = sa.create_engine(again.url("mlflow"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT v FROM kept")).scalar() == 7
        engine.dispose()
    finally:
        pg.drop_postgres(runs)
    assert not home.exists() and not link.is_symlink() and not pg.has_postgres(runs)


@needs_pg
@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to another user")
def test_as_root_a_database_inside_an_unreachable_folder_is_named_not_moved(
        tmp_path: Path) -> None:
    """A database cluster already inside the runs folder stays there: the error names the
    folder the 'postgres' user cannot enter and the fix, before anything starts."""
    data = tmp_path / "runs" / "postgres" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    with pytest.raises(pg.PostgresError, match="not searchable by others") as e:
        pg.ensure_postgres(tmp_path / "runs")
    assert "chmod o+x" in str(e.value)
    assert not data.is_symlink() and pg.postgres_status(tmp_path / "runs") is None


def test_workers_and_capacity_warning() -> None:
    assert [workers_for(n, cpus=16) for n in (1, 16, 17, 32, 64, 1000)] == [1, 1, 2, 2, 4, 8]
    assert [workers_for(n, cpus=2) for n in (1, 16, 64)] == [1, 1, 2]  # at most one per core

    def server(store: str, workers: int) -> ServerInfo:
        uri = "sqlite:////x/mlflow.db" if store == "sqlite" else "postgresql+psycopg2://u@/m"
        return ServerInfo(url="http://127.0.0.1:1", pid=1, port=1, host="127.0.0.1",
                          backend_uri=uri, artifacts_dir=Path("/x"), log_path=Path("/x"),
                          started_at=0.0, workers=workers, store=store)

    assert capacity_warning(server("sqlite", 1), 16) is None
    warning = capacity_warning(server("sqlite", 1), 32)
    assert warning is not None and "--workers " in warning and "postgres" in warning
    assert capacity_warning(server("postgres", 2), 64) is None
    assert capacity_warning(server("postgres", 4), 64) is None
    assert capacity_warning(server("postgres", 4), 65) is not None
    team = dataclasses.replace(server("postgres", 4), store="uri")  # MLflow's default pool
    assert capacity_warning(team, 32) is None
    assert "--backend-store-uri postgres" in (capacity_warning(team, 64) or "")
    assert server_status(Path("/nonexistent-runs")).state == "stopped"
