"""Least privilege: what `migrate` (as the schema owner) grants the role `serve` runs as.

DESIGN.md "Least privilege": the app role gets exactly what `serve` needs, and on the audit
trail (audit_log, audit_seals) only SELECT and INSERT. It owns nothing, so it can neither
alter, disable nor drop the append-only triggers; without TRUNCATE, UPDATE and DELETE there
it cannot rewrite history; and `session_replication_role` is a superuser's setting.

The grants are re-done from scratch on every `migrate` (REVOKE ALL, then GRANT), so they
are idempotent and follow this table when it changes. A new table needs a line here
(tests/integration/test_privilege.py fails otherwise).
"""

from __future__ import annotations

from typing import Final

import psycopg
from psycopg import sql

# Row locks (SELECT ... FOR UPDATE / FOR NO KEY UPDATE / FOR KEY SHARE) and
# INSERT ... ON CONFLICT DO UPDATE need UPDATE as well.
APP_TABLE_PRIVILEGES: Final[dict[str, tuple[str, ...]]] = {
    "tenants": ("SELECT", "INSERT", "UPDATE"),
    "deliveries": ("SELECT", "INSERT"),
    "alerts": ("SELECT", "INSERT", "UPDATE"),
    "audit_log": ("SELECT", "INSERT"),
    "audit_seals": ("SELECT", "INSERT"),
    "breakers": ("SELECT", "INSERT", "UPDATE"),
    "notifications": ("SELECT", "INSERT", "UPDATE"),
    "incidents": ("SELECT", "INSERT", "UPDATE"),
    "incident_counters": ("SELECT", "INSERT", "UPDATE"),
    "incident_tenants": ("SELECT", "INSERT"),
    "incident_alerts": ("SELECT", "INSERT"),
    "postmortems": ("SELECT", "INSERT", "UPDATE"),
    # A postmortem's action items are replaced as a whole: DELETE then INSERT.
    "action_items": ("SELECT", "INSERT", "DELETE"),
    # The truth from Alertmanager: the reconciler's lease and results, the instances
    # absent from its last complete poll (replaced as a set), the heartbeat's row.
    "reconciler_state": ("SELECT", "INSERT", "UPDATE"),
    "reconcile_absent": ("SELECT", "INSERT", "DELETE"),
    "heartbeat_state": ("SELECT", "INSERT", "UPDATE"),
    # Probe reports are kept as they arrived (the what-if replay reads them).
    "probe_outcomes": ("SELECT", "INSERT"),
    # /readyz compares the schema revision with the scripts' head.
    "alembic_version": ("SELECT",),
    # The SQL views of the README, for the API's and people's reads.
    "incident_summary": ("SELECT",),
    "tenant_history": ("SELECT",),
}
SCHEMA: Final = "public"
# The same lock as migrations/env.py: grants never interleave with an upgrade.
MIGRATION_LOCK: Final = 7262021


class RoleError(RuntimeError):
    """The app role cannot be given least privilege (missing, too powerful, the owner)."""


def _check_role(conn: psycopg.Connection, role: str) -> None:
    row = conn.execute(
        """
        SELECT r.rolsuper, r.rolbypassrls, r.rolname = current_user,
               pg_has_role(r.oid, current_user, 'MEMBER'),
               EXISTS (SELECT 1 FROM pg_class c WHERE c.relowner = r.oid
                       AND c.relnamespace = %s::regnamespace)
        FROM pg_roles r WHERE r.rolname = %s
        """,
        (SCHEMA, role),
    ).fetchone()
    if row is None:
        raise RoleError(
            f"RECEIVER_DB_APP_ROLE={role}: no such role; create it first, e.g. "
            f"CREATE ROLE {role} LOGIN PASSWORD '...' (NOSUPERUSER is the default)"
        )
    superuser, bypassrls, is_owner, member_of_owner, owns = row
    if superuser or bypassrls:
        raise RoleError(
            f"RECEIVER_DB_APP_ROLE={role} is a superuser (or BYPASSRLS): use a plain role"
        )
    if is_owner or member_of_owner or owns:
        raise RoleError(
            f"RECEIVER_DB_APP_ROLE={role} is, or acts as, the schema owner: serve must run as a "
            "role that owns nothing (migrate runs as the owner)"
        )


def grant_app_role(libpq_url: str, role: str) -> None:
    """Give `role` exactly what `serve` needs; run as the owner after the upgrade."""
    with psycopg.connect(libpq_url) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        _check_role(conn, role)
        who = sql.Identifier(role)
        schema = sql.Identifier(SCHEMA)
        for kind in ("TABLES", "SEQUENCES"):
            conn.execute(
                sql.SQL("REVOKE ALL ON ALL {} IN SCHEMA {} FROM {}").format(
                    sql.SQL(kind), schema, who
                )
            )
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(schema, who))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, who))
        for table, privileges in APP_TABLE_PRIVILEGES.items():
            conn.execute(
                sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                    sql.SQL(", ").join(sql.SQL(p) for p in privileges),
                    sql.Identifier(SCHEMA, table),
                    who,
                )
            )
        # Identity columns draw their ids from sequences: nextval needs USAGE (not UPDATE,
        # which would allow setval).
        conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(schema, who))


def tables_without_grants(libpq_url: str) -> list[str]:
    """Tables and views of the schema that APP_TABLE_PRIVILEGES does not mention."""
    with psycopg.connect(libpq_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (SCHEMA,),
        ).fetchall()
    return sorted(name for (name,) in rows if name not in APP_TABLE_PRIVILEGES)
