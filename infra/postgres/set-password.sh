#!/bin/sh
# Runs after init.sql on an empty data directory (docker-entrypoint-initdb.d, sorted by name): the `safe`
# role's password from SAFE_DB_PASSWORD, the one setting for the database credentials in docker-compose.yml.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v pw="$SAFE_DB_PASSWORD" <<'SQL'
ALTER ROLE safe WITH PASSWORD :'pw';
SQL
