-- stream_events 0.1.0 -> 0.2.0 (issue 12: trust boundary).
--
-- Brings a 0.1.0 installation to exactly what a fresh 0.2.0 install
-- (sql/modules/*.sql) creates; test/t/040_upgrade.pl compares the two with
-- pg_dump --binary-upgrade and fails on any difference.  Rules: tables are
-- altered in place (ALTER TABLE; their rows and pg_extension_config_dump
-- registrations stay); functions whose signature or return type changes are
-- dropped and created again; views whose columns change are dropped and
-- created again; everything else is CREATE OR REPLACE.  Grants, policies and
-- comments are repeated as the modules state them.

\echo Use "ALTER EXTENSION stream_events UPDATE TO '0.2.0'" to load this file. \quit
