/*
 * pg_schema.c - the PostgreSQL store's schema, made or upgraded at open: the table, the change
 * log, and the triggers that give every write its version and its log row, whoever made it.
 * The table's name, checked at open to be an SQL identifier, is the one thing pasted into SQL;
 * values are always bound parameters.
 */
#include "store/pg_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- schema --------------------------------------------------------------------------------- */

static const char schema_fmt[] =
    "CREATE SEQUENCE IF NOT EXISTS \"@_seq\";\n"
    "CREATE TABLE IF NOT EXISTS \"@\" (key TEXT PRIMARY KEY, value BYTEA NOT NULL,"
    " version BIGINT NOT NULL DEFAULT 0, updated_at BIGINT NOT NULL DEFAULT 0);\n"
    /* Plain-SQL writers: see the top of the file. The triggers' WHEN decides, so the library's
     * own writes, which always raise the version, never call into PL/pgSQL. */
    "CREATE OR REPLACE FUNCTION \"@_ver\"() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  NEW.version := nextval('\"@_seq\"');\n"
    "  NEW.updated_at := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;\n"
    "  RETURN NEW;\n"
    "END $f$;\n"
    /* The table's write lock (see the top of the file). Statement-level: once per write
     * statement, whatever the number of rows (none included). */
    "CREATE OR REPLACE FUNCTION \"@_lock\"() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  PERFORM pg_advisory_xact_lock(1952670054, hashtext('@'));\n"
    "  RETURN NULL;\n"
    "END $f$;\n"
    /* A function, not one statement: its DELETE must run under a snapshot taken after the
     * table's lock (PL/pgSQL takes one per statement; the DELETE's own statement trigger would
     * take the lock only after its snapshot), or it would miss a row that a put committed
     * while this waited for the lock, and return a version above that put's. */
    "CREATE OR REPLACE FUNCTION \"@_del\"(k text) RETURNS bigint LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  PERFORM pg_advisory_xact_lock(1952670054, hashtext('@'));\n"
    "  DELETE FROM \"@\" WHERE key = k;\n"
    "  IF FOUND THEN\n"
    "    RETURN currval('\"@_seq\"');\n"
    "  END IF;\n"
    "  RETURN nextval('\"@_seq\"');\n"
    "END $f$;\n"
    /* The change feed (store.h): see "The change feed" at the top of the file. */
    "CREATE TABLE IF NOT EXISTS \"@_log\" (seq BIGSERIAL PRIMARY KEY, key TEXT NOT NULL,"
    " version BIGINT NOT NULL, at BIGINT NOT NULL);\n"
    "CREATE TABLE IF NOT EXISTS \"@_feed\" (consumer TEXT PRIMARY KEY,"
    " seq BIGINT NOT NULL DEFAULT 0, holder TEXT NOT NULL DEFAULT '',"
    " lease_until BIGINT NOT NULL DEFAULT 0);\n"
    "CREATE OR REPLACE FUNCTION \"@_chg\"() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "DECLARE\n"
    "  now_ms bigint;\n"
    "BEGIN\n"
    "  PERFORM pg_advisory_xact_lock(1952670054, hashtext('@'));\n"
    "  now_ms := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;\n"
    "  IF TG_OP = 'DELETE' THEN\n"
    "    INSERT INTO \"@_log\" (key, version, at) VALUES (OLD.key, nextval('\"@_seq\"'), now_ms);\n"
    "  ELSE\n"
    "    INSERT INTO \"@_log\" (key, version, at) VALUES (NEW.key, NEW.version, now_ms);\n"
    "    IF TG_OP = 'UPDATE' AND NEW.key IS DISTINCT FROM OLD.key THEN\n"
    "      INSERT INTO \"@_log\" (key, version, at) VALUES (OLD.key, NEW.version, now_ms);\n"
    "    END IF;\n"
    "  END IF;\n"
    "  PERFORM pg_notify('@_feed', '');\n"
    "  RETURN NULL;\n"
    "END $f$;\n";

/* Fires before any row of the statement is touched (and before an INSERT's VALUES or SELECT
 * is evaluated): for the library's upsert, both as INSERT and as UPDATE. */
static const char lock_trigger_fmt[] =
    "CREATE TRIGGER tiercache_lock BEFORE INSERT OR UPDATE OR DELETE ON \"@\""
    " FOR EACH STATEMENT EXECUTE FUNCTION \"@_lock\"()";

static const char trigger_fmt[] =
    "CREATE TRIGGER tiercache_version_ins BEFORE INSERT ON \"@\" FOR EACH ROW"
    " WHEN (NEW.version IS NULL OR NEW.version <= 0) EXECUTE FUNCTION \"@_ver\"();\n"
    "CREATE TRIGGER tiercache_version_upd BEFORE UPDATE ON \"@\" FOR EACH ROW"
    " WHEN (NEW.version IS NULL OR NEW.version <= OLD.version) EXECUTE FUNCTION \"@_ver\"()";

/* Immediate: they run at the end of each statement, under the table's write lock, so the log's
 * seqs and a delete's version are drawn in commit order, and in statement order within a
 * transaction. See the top of the file. */
static const char log_trigger_fmt[] =
    "CREATE TRIGGER tiercache_log_ins AFTER INSERT ON \"@\""
    " FOR EACH ROW EXECUTE FUNCTION \"@_chg\"();\n"
    "CREATE TRIGGER tiercache_log_upd AFTER UPDATE ON \"@\" FOR EACH ROW"
    " WHEN (NEW.version IS DISTINCT FROM OLD.version OR NEW.key IS DISTINCT FROM OLD.key)"
    " EXECUTE FUNCTION \"@_chg\"();\n"
    "CREATE TRIGGER tiercache_log_del AFTER DELETE ON \"@\""
    " FOR EACH ROW EXECUTE FUNCTION \"@_chg\"()";

/* An older schema's log triggers were deferred constraint triggers: dropped, then made again. */
static const char log_trigger_drop_fmt[] =
    "DROP TRIGGER IF EXISTS tiercache_log_ins ON \"@\";\n"
    "DROP TRIGGER IF EXISTS tiercache_log_upd ON \"@\";\n"
    "DROP TRIGGER IF EXISTS tiercache_log_del ON \"@\"";

/* A statement whose result the caller does not need. */
static int exec_ok(const pg_store *s, PGconn *pg, const char *sql, int nparams,
                   const char *const *vals, const char *op, PGresult **out)
{
    PGresult *res = nparams > 0 ? PQexecParams(pg, sql, nparams, NULL, vals, NULL, NULL, 0)
                                : PQexec(pg, sql);
    ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = tc__pg_fail(s, pg, res, op);
        PQclear(res);
        return rc;
    }
    if (out != NULL)
        *out = res;
    else
        PQclear(res);
    return TC_OK;
}

/* Creates a group of triggers (all of group's names, made by sql) if none exists; under the
 * schema lock. Some but not all: an error, since this library makes them together. */
static int create_triggers(const pg_store *s, PGconn *pg, const char *rel, const char *names,
                           int count, const char *sql)
{
    const char *const args[] = {rel, names};
    PGresult *res = NULL;
    int rc = exec_ok(s, pg,
                     "SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass"
                     " AND tgname = ANY (string_to_array($2, ','))",
                     2, args, "schema", &res);
    if (rc != TC_OK)
        return rc;
    int have = PQntuples(res);
    PQclear(res);
    if (have == 0)
        return exec_ok(s, pg, sql, 0, NULL, "schema trigger", NULL);
    if (have != count)
        return tc__err(s->base.owner, TC_ESTORE,
                       "postgres: schema: %s has only some of its triggers %s; drop them or "
                       "create the others",
                       s->table, names);
    return TC_OK;
}

/* Drops the log triggers if an older schema made them deferred (sql drops all three); under
 * the schema lock, before create_triggers makes them again. */
static int drop_deferred_log_triggers(const pg_store *s, PGconn *pg, const char *rel,
                                      const char *sql)
{
    const char *const args[] = {rel};
    PGresult *res = NULL;
    int rc = exec_ok(s, pg,
                     "SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass AND tgdeferrable"
                     " AND tgname IN ('tiercache_log_ins', 'tiercache_log_upd',"
                     " 'tiercache_log_del')",
                     1, args, "schema", &res);
    if (rc != TC_OK)
        return rc;
    int deferred = PQntuples(res) > 0;
    PQclear(res);
    return deferred ? exec_ok(s, pg, sql, 0, NULL, "schema trigger", NULL) : TC_OK;
}

int tc__pg_create_schema(const pg_store *s, PGconn *pg)
{
    char rel[TABLE_MAX + 3], seq[TABLE_MAX + 7], ver[TABLE_MAX + 9], del[TABLE_MAX + 13];
    char log[TABLE_MAX + 7], feed[TABLE_MAX + 8], chg[TABLE_MAX + 9], lck[TABLE_MAX + 10];
    snprintf(rel, sizeof rel, "\"%s\"", s->table);
    snprintf(seq, sizeof seq, "\"%s_seq\"", s->table);
    snprintf(ver, sizeof ver, "\"%s_ver\"()", s->table);
    snprintf(del, sizeof del, "\"%s_del\"(text)", s->table);
    snprintf(log, sizeof log, "\"%s_log\"", s->table);
    snprintf(feed, sizeof feed, "\"%s_feed\"", s->table);
    snprintf(chg, sizeof chg, "\"%s_chg\"()", s->table);
    snprintf(lck, sizeof lck, "\"%s_lock\"()", s->table);
    const char *const names[] = {rel, seq, ver, del, log, feed, chg, lck};

    /* Usually all there: one query, no lock, no catalog writes. A table made before the feed
     * or the table lock existed lacks their objects and gets them here. */
    static const char check[] =
        "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL"
        " AND to_regprocedure($3) IS NOT NULL AND to_regprocedure($4) IS NOT NULL"
        " AND to_regclass($5) IS NOT NULL AND to_regclass($6) IS NOT NULL"
        " AND to_regprocedure($7) IS NOT NULL AND to_regprocedure($8) IS NOT NULL"
        " AND (SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1)"
        " AND tgname IN ('tiercache_version_ins', 'tiercache_version_upd', 'tiercache_log_ins',"
        " 'tiercache_log_upd', 'tiercache_log_del', 'tiercache_lock') AND NOT tgdeferrable) = 6";
    PGresult *res = NULL;
    int rc = exec_ok(s, pg, check, 8, names, "schema", &res);
    if (rc != TC_OK)
        return rc;
    int present = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (present)
        return TC_OK;

    char *ddl = tc__pg_fmt_sql(schema_fmt, s->table);
    char *trig = tc__pg_fmt_sql(trigger_fmt, s->table);
    char *log_trig = tc__pg_fmt_sql(log_trigger_fmt, s->table);
    char *lock_trig = tc__pg_fmt_sql(lock_trigger_fmt, s->table);
    char *log_drop = tc__pg_fmt_sql(log_trigger_drop_fmt, s->table);
    if (ddl == NULL || trig == NULL || log_trig == NULL || lock_trig == NULL || log_drop == NULL) {
        free(ddl), free(trig), free(log_trig), free(lock_trig), free(log_drop);
        return tc__err(s->base.owner, TC_ENOMEM, "postgres: schema: out of memory");
    }
    /* Under a lock on the table's name: two processes creating one table at once would
     * otherwise collide on the catalogs (unique_violation, "tuple concurrently updated").
     * 1952669025 ("tcaa") keeps this lock apart from other users of advisory locks. */
    const char *const lock_args[] = {rel};
    rc = exec_ok(s, pg, "BEGIN", 0, NULL, "schema", NULL);
    if (rc == TC_OK)
        rc = exec_ok(s, pg, "SELECT pg_advisory_xact_lock(1952669025, hashtext($1))", 1,
                     lock_args, "schema lock", NULL);
    if (rc == TC_OK)
        rc = exec_ok(s, pg, ddl, 0, NULL, "schema", NULL);
    if (rc == TC_OK)
        rc = create_triggers(s, pg, rel, "tiercache_version_ins,tiercache_version_upd", 2, trig);
    if (rc == TC_OK)
        rc = drop_deferred_log_triggers(s, pg, rel, log_drop);
    if (rc == TC_OK)
        rc = create_triggers(s, pg, rel, "tiercache_log_ins,tiercache_log_upd,tiercache_log_del",
                             3, log_trig);
    if (rc == TC_OK)
        rc = create_triggers(s, pg, rel, "tiercache_lock", 1, lock_trig);
    if (rc == TC_OK)
        rc = exec_ok(s, pg, "COMMIT", 0, NULL, "schema commit", NULL);
    if (rc != TC_OK)
        PQclear(PQexec(pg, "ROLLBACK"));
    free(ddl);
    free(trig);
    free(log_trig);
    free(lock_trig);
    free(log_drop);
    return rc;
}
