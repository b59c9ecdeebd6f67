"""The role list, the grants file and the template agree (one mapping function → role, in the template)."""

from __future__ import annotations

import re
from importlib import resources

from smartpay import access
from smartpay_tools.local.template import Template

GRANTS = resources.files("smartpay.migrations").joinpath("R__grants.sql").read_text(encoding="utf-8")
#: Functions that connect as the schema owner (their secret is DatabaseSecretArn).
OWNER_FUNCTIONS = {"MigrateFunction"}
#: Functions that never touch PostgreSQL; every other one declares DATABASE_URL and a DB_ROLE.
NO_DATABASE = {"AuthorizerFunction"}


def _grantees() -> set[str]:
    code = "\n".join(line.split("--")[0] for line in GRANTS.splitlines())
    names: set[str] = set()
    for match in re.finditer(r"\b(?:TO|FROM)\s+([a-z_][a-z0-9_,\s]*?)(?:;|')", code):
        names |= {n.strip() for n in match.group(1).split(",") if n.strip()}
    return names - {"public"}


def test_grants_file_names_exactly_the_roles() -> None:
    assert _grantees() == access.ROLE_NAMES


def test_every_database_function_has_its_own_role_and_secret() -> None:
    template = Template()
    raw = template.resources
    for logical_id, spec in template.functions().items():
        env = raw[logical_id]["Properties"].get("Environment", {}).get("Variables", {})
        if logical_id in NO_DATABASE:
            assert "DATABASE_URL" not in spec.environment and "DATABASE_URL_SECRET" not in spec.environment
            continue
        assert "DATABASE_URL" in spec.environment, (
            f"{logical_id}: declare DB_ROLE, DATABASE_URL and its own DATABASE_URL_SECRET (docs/database.md)")
        # !If [CreateDatabase, <created secret>, !Ref <parameter>] (test_template_production checks the first)
        secret_param = env["DATABASE_URL_SECRET"]["Fn::If"][2]["Ref"]
        policies = str(raw[raw[logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"].get("Policies"))
        assert f"'Ref': '{secret_param}'" in policies, f"{logical_id} may not read its own secret"
        if logical_id in OWNER_FUNCTIONS:
            assert "DB_ROLE" not in env and secret_param == "DatabaseSecretArn"
        else:
            assert env.get("DB_ROLE") in access.ROLE_NAMES, f"{logical_id} needs DB_ROLE (docs/database.md)"
            assert secret_param != "DatabaseSecretArn", f"{logical_id} must not use the owner's secret"
            assert "DatabaseSecretArn'" not in policies.replace(secret_param, ""), logical_id
    roles = [raw[f]["Properties"]["Environment"]["Variables"].get("DB_ROLE") for f in template.functions()
             if "DB_ROLE" in raw[f]["Properties"].get("Environment", {}).get("Variables", {})]
    assert len(roles) == len(set(roles)), "two functions share a database role"


def test_admin_sql_creates_login_roles_without_privileges() -> None:
    role = access.ROLES[0]
    statements = [s.as_string(None) for s in access.create_statements(role)]
    assert statements[0].startswith(f'CREATE ROLE "{role.name}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
    assert any("default_transaction_read_only" in s for s in statements)
