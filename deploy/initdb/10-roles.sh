#!/bin/sh
# Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d):
# the two roles of DESIGN.md "Least privilege". `migrate` runs as receiver_owner (it owns
# the database and so the schema) and grants receiver_app what `serve` needs.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner_password="$RECEIVER_OWNER_PASSWORD" -v app_password="$RECEIVER_APP_PASSWORD" <<'SQL'
CREATE ROLE receiver_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_password';
CREATE ROLE receiver_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
ALTER DATABASE receiver OWNER TO receiver_owner;
REVOKE ALL ON DATABASE receiver FROM PUBLIC;
GRANT CONNECT ON DATABASE receiver TO receiver_app;
SQL
