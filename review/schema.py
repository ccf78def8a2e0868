"""The review store's tables, as versioned migrations: `review/migrations/NNNN_name.sql`, applied in order,
each once, by `lifeguard review migrate`.

Applied versions are kept in ``schema_migrations``. The pending files are applied in one transaction under
an advisory lock: two migrators started together apply each file once, and a failing file leaves the
database as it was. A file is never edited once it has landed: a change is a new file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from lifeguard.config import ReviewConfig

MIGRATIONS = Path(__file__).parent / "migrations"
_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_LOCK_KEY = 0x4C49_4645  # any constant of this application's own: "LIFE"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations(folder: Path = MIGRATIONS) -> list[Migration]:
    """The migration files in version order; a stray file or a repeated version is an error, not skipped."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(("__", ".")):
            continue
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise ValueError(f"{path}: a migration is named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{folder}: two migrations share a version number")
    return found


def create_database(config: ReviewConfig) -> bool:
    """Creates the configured database on its server if it is missing; True if it was created."""
    with psycopg.connect(**config.connection_options("postgres"), autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (config.database,)).fetchone():
            return False
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config.database)))
        return True


def drop_database(config: ReviewConfig) -> None:
    """Drops the configured database, closing its connections (a test's or a benchmark's own)."""
    with psycopg.connect(**config.connection_options("postgres"), autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(config.database)))


def migrate(connection: psycopg.Connection, folder: Path = MIGRATIONS) -> list[Migration]:
    """Applies the migrations `connection`'s database lacks, in order; returns those applied."""
    connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                       "applied_at timestamptz NOT NULL DEFAULT now())")
    connection.commit()
    applied = []
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        done = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
        for migration in migrations(folder):
            if migration.version in done:
                continue
            with connection.transaction():
                connection.execute(migration.path.read_text())
                connection.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                                   (migration.version, migration.name))
            applied.append(migration)
    return applied


def prepare_database(config: ReviewConfig) -> tuple[bool, list[Migration]]:
    """Creates the configured database if missing and applies its pending migrations: (created, applied)."""
    created = create_database(config)
    with psycopg.connect(**config.connection_options()) as connection:
        return created, migrate(connection)
