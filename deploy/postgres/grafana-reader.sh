#!/bin/sh
# Run once by the postgres image on its first start (/docker-entrypoint-initdb.d): a role
# Grafana logs in as, that can read every table and view the receiver's migrations create
# (default privileges of the owner, $POSTGRES_USER) and change none.
set -eu
password=$(cat /run/secrets/grafana_db_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$password" -v db="$POSTGRES_DB" -v owner="$POSTGRES_USER" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'password';
GRANT CONNECT ON DATABASE :"db" TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
