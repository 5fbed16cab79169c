"""The Alembic migrations create exactly the schema the models describe."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service.db import models  # noqa: F401 - registers the tables
from service.db.base import Base
from service.db.engine import make_engine
from service.db.migrate import alembic_config, upgrade

TABLES = {"experiments", "experiment_tags", "series", "point_chunks", "timestep_chunks", "sweeps"}


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_models_and_migrations_agree(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    assert _diff(empty_database_url) == []
    engine = make_engine(empty_database_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert TABLES <= tables


def test_upgrade_is_idempotent_and_downgrade_removes_everything(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    upgrade(empty_database_url)  # a second `gradwatch up` finds nothing to do
    command.downgrade(alembic_config(empty_database_url), "base")
    engine = make_engine(empty_database_url)
    try:
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade(empty_database_url)
    assert _diff(empty_database_url) == []


def test_every_constraint_and_index_is_named() -> None:
    for table in Base.metadata.sorted_tables:
        for constraint in table.constraints:
            assert constraint.name, f"unnamed {type(constraint).__name__} on {table.name}"
            assert not str(constraint.name).startswith("_unnamed"), (table.name, constraint)
        for index in table.indexes:
            assert index.name and index.name.startswith("ix_"), (table.name, index)


def test_the_database_enforces_status_and_cascades(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        # The check constraint rejects a status the API does not know.
        try:
            with connection.begin_nested():
                connection.execute(
                    sa.text(
                        "INSERT INTO experiments (id, name, status, spec, queue, cancel_requested,"
                        " progress_step, created_at) VALUES ('x', 'n', 'bogus', '{}', 'cpu',"
                        " false, 0, CURRENT_TIMESTAMP)"
                    )
                )
            raise AssertionError("a bogus status was accepted")
        except sa.exc.IntegrityError:
            pass

    with engine.begin() as connection:
        # Deleting an experiment deletes its tags, series, point chunks and timestep chunks.
        now = "CURRENT_TIMESTAMP"
        connection.execute(sa.text(f"INSERT INTO sweeps (id, name, base_spec, grid, created_at) VALUES ('s', 'sweep', '{{}}', '{{}}', {now})"))
        for experiment_id in ("e1", "e2"):
            connection.execute(
                sa.text(
                    "INSERT INTO experiments (id, name, status, spec, queue, cancel_requested, progress_step,"
                    f" created_at, sweep_id) VALUES ('{experiment_id}', 'n', 'queued', '{{}}', 'cpu', false, 0, {now}, 's')"
                )
            )
            connection.execute(
                sa.text(f"INSERT INTO experiment_tags (experiment_id, tag, position) VALUES ('{experiment_id}', 't', 0)")
            )
            series_id = connection.execute(
                sa.text(
                    "INSERT INTO series (experiment_id, metric, layer, position)"
                    f" VALUES ('{experiment_id}', 'loss', '', -1) RETURNING id"
                )
            ).scalar_one()
            blob = {"b": b"\x00" * 8}
            connection.execute(
                sa.text(
                    "INSERT INTO point_chunks (series_id, first_step, last_step, n_points, steps, \"values\","
                    f" summary_steps, summary_values) VALUES ({series_id}, 0, 0, 1, :b, :b, :b, :b)"
                ),
                blob,
            )
            connection.execute(
                sa.text(
                    "INSERT INTO timestep_chunks (experiment_id, layer_index, first_step, last_step, n_steps,"
                    " n_timesteps, steps, timesteps, hidden_grad_norm, cell_grad_norm)"
                    f" VALUES ('{experiment_id}', 0, 0, 0, 1, 1, :b, :b, :b, NULL)"
                ),
                blob,
            )

        def count(table: str) -> int:
            return connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()

        children = ("experiment_tags", "series", "point_chunks", "timestep_chunks")
        assert {table: count(table) for table in children} == dict.fromkeys(children, 2)
        connection.execute(sa.text("DELETE FROM experiments WHERE id = 'e1'"))
        assert {table: count(table) for table in children} == dict.fromkeys(children, 1), "e1's rows go, e2's stay"

        # Deleting a sweep keeps its experiments and clears their sweep_id (SET NULL).
        connection.execute(sa.text("DELETE FROM sweeps WHERE id = 's'"))
        assert connection.execute(sa.text("SELECT id, sweep_id FROM experiments")).all() == [("e2", None)]
        assert {table: count(table) for table in children} == dict.fromkeys(children, 1)
