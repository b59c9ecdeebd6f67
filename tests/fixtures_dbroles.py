"""Fixtures for the database access matrix: connections as a role, throwaway databases and roles.

Roles are cluster-wide: tests only ever drop the uniquely named roles they created themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from smartpay_tools.local.services import url_as


@pytest.fixture()
def connect_as(pg_url: str) -> Iterator[Callable[[str], psycopg.Connection[Any]]]:
    """Open connections to the test database as a given role; closed after the test."""
    opened: list[psycopg.Connection[Any]] = []

    def _connect(role: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(url_as(pg_url, role), row_factory=dict_row)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


class Scratch:
    """Throwaway databases and uniquely named roles, dropped by the fixture afterwards."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.databases: list[str] = []
        self.roles: list[str] = []

    def _admin(self, statement: sql.Composable) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)

    def name(self, prefix: str) -> str:
        """A new role name; dropped after the test if anything created it."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.roles.append(name)
        return name

    def role(self, prefix: str, attributes: str = "LOGIN") -> str:
        name = self.name(prefix)
        self._admin(sql.SQL("CREATE ROLE {} " + attributes).format(sql.Identifier(name)))
        return name

    def database(self, owner: str | None = None) -> str:
        """A new empty database (owned by ``owner`` and connected as it, if given); its URL."""
        name = f"smartpay_scratch_{uuid.uuid4().hex[:10]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            statement += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
        self._admin(statement)
        self.databases.append(name)
        url = make_conninfo(self.admin_url, dbname=name)
        return url_as(url, owner) if owner else url

    def drop(self) -> None:
        for name in self.databases:
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for name in self.roles:
            self._admin(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture()
def scratch(pg_url: str) -> Iterator[Scratch]:
    from tests.conftest import ADMIN_URL

    made = Scratch(ADMIN_URL)
    yield made
    made.drop()
