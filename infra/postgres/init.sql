-- PostgreSQL bootstrap for the SAFE procurement platform (docker-compose.yml mounts it into
-- /docker-entrypoint-initdb.d/; it runs once, on an empty data directory, as the superuser).
-- One database per service, all owned by the `safe` role; each service migrates its own schema with
-- Alembic at start-up. The password matches .env.example's development default: change it (and the
-- <SERVICE>_DATABASE_URL variables) for anything shared. In production prefer managed PostgreSQL.

CREATE ROLE safe WITH LOGIN PASSWORD 'safe';

CREATE DATABASE applications OWNER safe;
CREATE DATABASE origin_verification OWNER safe;
CREATE DATABASE partner_registry OWNER safe;
CREATE DATABASE loan_disbursement OWNER safe;

-- PostgreSQL 15+ no longer lets every role create objects in `public`: the owner of each database gets it.
\connect applications
ALTER SCHEMA public OWNER TO safe;
\connect origin_verification
ALTER SCHEMA public OWNER TO safe;
\connect partner_registry
ALTER SCHEMA public OWNER TO safe;
\connect loan_disbursement
ALTER SCHEMA public OWNER TO safe;
