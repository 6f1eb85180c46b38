/*
 * sqlite_conn.c - the SQLite store's connection: one per store object, guarded by a mutex; WAL
 * mode and synchronous=FULL; the schema and the prepared statements; the SQLite files this
 * process has open, so that a fork()ed child never closes (and so never checkpoints or
 * unlinks) its parent's; and the wakers that let a feed reader sleep until a commit. Why each
 * is so is in store_sqlite.c's head.
 */
#include "store/sqlite_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


/* A child's inherited wakers, kept reachable like the graveyard's connections (valgrind: "still
 * reachable"): a parent thread may have held one's mutex at fork time, so it is never used or
 * destroyed in the child. Push-only, lock-free. */
static _Atomic(waker *) dead_wakers;

void tc__sqlite_bury_waker(waker *w)
{
    if (w == NULL)
        return;
    w->next_dead = atomic_load_explicit(&dead_wakers, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&dead_wakers, &w->next_dead, w,
                                                  memory_order_release, memory_order_relaxed))
        ;
}

/* ---- errors --------------------------------------------------------------------------------- */

/* Reports the connection's last error for operation op. Must run before anything else is done
 * on the connection (a ROLLBACK would replace the message). */
int tc__sqlite_db_fail(const sqlite_store *s, sqlite3 *db, const char *op)
{
    if (db == NULL || sqlite3_errcode(db) == SQLITE_NOMEM)
        return tc__err(s->base.owner, TC_ENOMEM, "sqlite %s: %s: %s", s->path, op,
                       sqlite3_errstr(SQLITE_NOMEM));
    return tc__err(s->base.owner, TC_ESTORE, "sqlite %s: %s: %s (%d)", s->path, op,
                   sqlite3_errmsg(db), sqlite3_extended_errcode(db));
}

/* ---- the graveyard ------------------------------------------------------------------------- */

/* Where a child puts what it inherited and must neither use nor release: connections, mutexes,
 * and the descriptors that hold its locks (hold_inherited). A process-wide push-only lock-free
 * stack, so that pushing takes no lock a fork could leave held, and so that all of it stays
 * reachable (valgrind: "still reachable", not "definitely lost") after the store is closed. */
typedef struct grave {
    struct grave *next;
    sqlite3 *db;
    pthread_mutex_t *mu;
    int fd;
} grave;

static _Atomic(grave *) graveyard;

void tc__sqlite_bury(sqlite3 *db, pthread_mutex_t *mu, int fd)
{
    grave *g = malloc(sizeof *g);
    if (g == NULL)
        return; /* then it is simply leaked, which is all burying does anyway */
    g->db = db;
    g->mu = mu;
    g->fd = fd;
    g->next = atomic_load_explicit(&graveyard, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&graveyard, &g->next, g, memory_order_release,
                                                  memory_order_relaxed))
        ;
}

/* ---- inherited SQLite state ----------------------------------------------------------------- */

/*
 * SQLite keeps, per process, one record of each database file it has open (by device and inode)
 * with the locks that the process holds on it, and one record of its -shm file and mapping.
 * A child inherits those records from the fork. A connection the child opens to the same file
 * finds and shares them, so it believes the process already holds the locks that the parent's
 * connection held at fork time, while fcntl locks are never carried into a child: the child
 * holds nothing. Measured with this store before the fix below: a child put, then the parent
 * closed its last connection; the parent, seeing no other reader, checkpointed and deleted the
 * -wal and -shm files, and the child's next put was acknowledged into the deleted WAL and lost.
 * A process opening the file while only the child is left would likewise run WAL recovery and
 * truncate the -shm file under the child.
 *
 * So, before a process opens a connection to a file that an ancestor had open at fork time,
 * it takes the two read locks every live SQLite connection holds: a byte of the database's
 * SHARED range and the DMS byte of the -shm file. It takes them as open-file-description locks
 * (F_OFD_SETLK), which are not dropped when SQLite closes some other descriptor of the same file
 * (POSIX process locks are, all of them, on any close). Their descriptors go to the graveyard
 * and are never closed: the inherited records never go away either, so this process stays a
 * reader of the file until it exits. That only keeps the last closer from deleting the WAL.
 *
 * If the -shm file is no longer the one the ancestor had mapped (the parent closed and cleaned
 * up before the child's first call), the inherited records are stale, and a connection sharing
 * them would use a deleted wal-index. Nothing outside SQLite can repair that, so the file is
 * refused in this process (TC_ESTORE) instead.
 *
 * Not covered: a fork while another thread is inside a store call. The inherited records then
 * claim a read or write lock for the abandoned connection, so the child may fail to write
 * (busy) or read without a real read lock. Quiescing the stores in a pthread_atfork prepare
 * handler would close that window, at the price of making fork wait for store calls. Also not
 * covered: SQLite connections opened by other code in the same process, and SQLite's global
 * mutexes inherited held.
 *
 * The registry below counts this library's open connections per file and generation.
 */
struct file_node {
    struct file_node *next;
    dev_t dev;
    ino_t ino;
    unsigned gen;     /* the generation whose connections open counts */
    int open;         /* connections of that generation open on the file */
    int have_shm;     /* shm_dev/shm_ino: the -shm file while those connections had it open */
    dev_t shm_dev;
    ino_t shm_ino;
    unsigned held;    /* 1 + the generation that took the locks for this (inherited) node */
    unsigned refused; /* 1 + the generation that found this (inherited) node stale */
    char path[];      /* the file name as SQLite resolved it */
};

static file_node *files;        /* under files_lock */
static atomic_uint files_lock;  /* a tag lock */

/* SQLite's lock bytes. They belong to the file format, since every SQLite version must share a
 * file with every other: the SHARED range starts 2 bytes past the pending byte at 1 GiB and is
 * 510 bytes long (https://sqlite.org/lockingv3.html, os.h), and the DMS lock is byte 128 of the
 * -shm file (https://sqlite.org/walformat.html). Checked against /proc/locks of a live
 * connection while writing this. */
#define SQLITE_SHARED_FIRST (0x40000000 + 2)
#define SQLITE_SHARED_SIZE 510
#define SQLITE_SHM_DMS 128

#ifdef F_OFD_SETLK
static int ofd_read_lock(int fd, off_t start, off_t len, int timeout_ms)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl); /* l_pid must be 0 for OFD locks */
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    /* Someone holds a write lock only while recovering the wal-index or closing the last
     * connection: brief, so a poll within busy_timeout is enough. */
    for (int waited = 0;; waited++) {
        if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
            return 0;
        if ((errno != EAGAIN && errno != EACCES && errno != EINTR) || waited >= timeout_ms)
            return -1;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}
#endif

/* Takes this process's locks on inherited node n (see above). Under files_lock. */
static int hold_inherited(const sqlite_store *s, file_node *n, unsigned gen)
{
#ifdef F_OFD_SETLK
    int fd = open(n->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tc__err(s->base.owner, TC_ESTORE, "sqlite %s: after fork: open %s: %s", s->path,
                       n->path, strerror(errno));
    struct stat sb;
    int ok = fstat(fd, &sb) == 0 && sb.st_dev == n->dev && sb.st_ino == n->ino &&
             ofd_read_lock(fd, SQLITE_SHARED_FIRST, SQLITE_SHARED_SIZE, s->busy_timeout_ms) == 0;
    int err = errno;
    tc__sqlite_bury(NULL, NULL, fd); /* closing it could drop the process's locks on the file */
    if (!ok)
        return tc__err(s->base.owner, TC_ESTORE, "sqlite %s: after fork: lock %s: %s", s->path,
                       n->path, strerror(err));
    if (!n->have_shm)
        return TC_OK;

    /* Our SHARED lock now keeps any last closer from deleting the -shm file, so what is
     * there now settles whether the inherited mapping is still the live one. */
    char shm[PATH_MAX];
    if (snprintf(shm, sizeof shm, "%s-shm", n->path) >= (int)sizeof shm)
        return tc__err(s->base.owner, TC_ESTORE, "sqlite %s: after fork: path too long",
                       s->path);
    fd = open(shm, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT)
        return tc__err(s->base.owner, TC_ESTORE, "sqlite %s: after fork: open %s: %s", s->path,
                       shm, strerror(errno));
    int stale = fd < 0 || fstat(fd, &sb) != 0 || sb.st_dev != n->shm_dev ||
                sb.st_ino != n->shm_ino;
    if (!stale) {
        ok = ofd_read_lock(fd, SQLITE_SHM_DMS, 1, s->busy_timeout_ms) == 0;
        err = errno;
    }
    if (fd >= 0)
        tc__sqlite_bury(NULL, NULL, fd);
    if (stale) {
        n->refused = gen + 1u;
        return tc__err(s->base.owner, TC_ESTORE,
                       "sqlite %s: after fork: the parent closed the database before this "
                       "process first used it, and SQLite's inherited state for it is stale; "
                       "this process cannot use it safely (use the store in the child before "
                       "the parent closes it, or open it in a process that never had it open)",
                       s->path);
    }
    if (!ok)
        return tc__err(s->base.owner, TC_ESTORE, "sqlite %s: after fork: lock %s: %s", s->path,
                       shm, strerror(err));
    return TC_OK;
#else
    /* Without OFD locks (not Linux) the child opens unprotected: see above. */
    (void)s;
    (void)n;
    (void)gen;
    return TC_OK;
#endif
}

/* Registers a connection of this process on file (dev, ino), after taking the locks that any
 * inherited SQLite state for that file needs. *out receives the node to release. */
static int registry_enter(const sqlite_store *s, dev_t dev, ino_t ino, const char *file,
                          file_node **out)
{
    unsigned gen = tc__fork_generation();
    int rc = TC_OK;
    file_node *mine = NULL;
    tc__tag_lock(&files_lock, gen);
    for (file_node *n = files; n != NULL && rc == TC_OK; n = n->next) {
        if (n->dev != dev || n->ino != ino)
            continue;
        if (n->gen == gen) {
            mine = n;
        } else if (n->open > 0 && n->held != gen + 1u) {
            /* An ancestor's, and so inherited: its connections are still open in our SQLite
             * records. */
            if (n->refused == gen + 1u)
                rc = tc__err(s->base.owner, TC_ESTORE,
                             "sqlite %s: after fork: the database was closed by the parent "
                             "before this process first used it; refusing it (see earlier "
                             "error)",
                             s->path);
            else if ((rc = hold_inherited(s, n, gen)) == TC_OK)
                n->held = gen + 1u;
        }
    }
    if (rc == TC_OK && mine == NULL) {
        size_t len = strlen(file) + 1;
        mine = calloc(1, sizeof *mine + len);
        if (mine == NULL) {
            rc = tc__err(s->base.owner, TC_ENOMEM, "sqlite %s: open: out of memory", s->path);
        } else {
            mine->dev = dev;
            mine->ino = ino;
            mine->gen = gen;
            memcpy(mine->path, file, len);
            mine->next = files;
            files = mine;
        }
    }
    if (rc == TC_OK) {
        mine->open++;
        *out = mine;
    }
    tc__tag_unlock(&files_lock);
    return rc;
}

/* Records the -shm file that the connections on n use (see hold_inherited). */
static void registry_record_shm(file_node *n)
{
    char shm[PATH_MAX];
    struct stat sb;
    int ok = snprintf(shm, sizeof shm, "%s-shm", n->path) < (int)sizeof shm &&
             stat(shm, &sb) == 0;
    tc__tag_lock(&files_lock, tc__fork_generation());
    n->have_shm = ok;
    if (ok) {
        n->shm_dev = sb.st_dev;
        n->shm_ino = sb.st_ino;
    }
    tc__tag_unlock(&files_lock);
}

/* The connection on n closed (in the generation that opened it). */
void tc__sqlite_registry_leave(file_node *n)
{
    if (n == NULL)
        return;
    tc__tag_lock(&files_lock, tc__fork_generation());
    if (--n->open == 0) {
        /* Nothing of ours is open on the file any more, so a future child inherits no records
         * for it from us: forget the node, which keeps the registry as small as what is open. */
        for (file_node **p = &files; *p != NULL; p = &(*p)->next) {
            if (*p == n) {
                *p = n->next;
                free(n);
                break;
            }
        }
    }
    tc__tag_unlock(&files_lock);
}

/* ---- the connection ------------------------------------------------------------------------- */

/* Unix milliseconds in SQL, for the triggers. julianday() has sub-millisecond resolution here;
 * unixepoch() gives whole seconds only before SQLite 3.42's 'subsec'. */
#define SQL_NOW_MS "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

/* Idempotent, and run inside BEGIN IMMEDIATE so that processes opening the same new file at
 * once take turns (under busy_timeout) instead of interleaving half-built schemas.
 *
 * The sequence row starts at the largest version already in the table, so a table created by
 * an older program keeps increasing versions.
 *
 * Triggers: a plain-SQL INSERT leaves version at its default 0, and a plain-SQL UPDATE of value
 * or key leaves version unchanged; both then get the next sequence value. Neither trigger can
 * fire itself or the other, whatever PRAGMA recursive_triggers says: their inner UPDATE sets
 * version and updated_at only, never value or key, so "AFTER UPDATE OF value, key" does not
 * match it, and it is not an INSERT. The library's own writes carry a fresh non-zero version, so neither trigger fires
 * for them. Not versioned: a plain-SQL write that sets version itself, and a plain-SQL DELETE
 * (nothing is left to carry a version). */
static const char schema_fmt[] =
    "CREATE TABLE IF NOT EXISTS \"%w\"("
    "key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL DEFAULT 0, "
    "updated_at INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS \"%w_seq\"("
    "id INTEGER PRIMARY KEY CHECK (id = 1), v INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO \"%w_seq\"(id, v) SELECT 1, COALESCE(MAX(version), 0) FROM \"%w\";"
    "CREATE TRIGGER IF NOT EXISTS \"%w_ai\" AFTER INSERT ON \"%w\" WHEN NEW.version = 0 BEGIN "
    "UPDATE \"%w_seq\" SET v = v + 1 WHERE id = 1; "
    "UPDATE \"%w\" SET version = (SELECT v FROM \"%w_seq\" WHERE id = 1), "
    "updated_at = " SQL_NOW_MS " WHERE rowid = NEW.rowid; END;"
    "CREATE TRIGGER IF NOT EXISTS \"%w_av\" AFTER UPDATE OF value, key ON \"%w\" "
    "WHEN NEW.version = OLD.version BEGIN "
    "UPDATE \"%w_seq\" SET v = v + 1 WHERE id = 1; "
    "UPDATE \"%w\" SET version = (SELECT v FROM \"%w_seq\" WHERE id = 1), "
    "updated_at = " SQL_NOW_MS " WHERE rowid = NEW.rowid; END;";

/* The change feed: a log the triggers fill on every insert, update and delete, whoever makes
 * it, and per consumer a checkpoint and a lease (store.h). Run after schema_fmt, in the same
 * transaction.
 *
 * AUTOINCREMENT: a seq is never reused, even after the newest rows were trimmed, so a
 * checkpoint can never point past a change it has not seen. Logged versions: an insert or
 * update logs the row's version once it has its final one (a plain-SQL write first gets 0 or
 * its old version, then the versioning trigger's inner UPDATE sets the new one, which is the
 * change logged); a delete takes a fresh version from the sequence, so even a plain-SQL DELETE
 * gives the invalidator a version newer than any copy of the row. */
static const char feed_schema_fmt[] =
    /* _av replaced _au (which did not version a plain-SQL rename of a key). */
    "DROP TRIGGER IF EXISTS \"%w_au\";"
    "CREATE TABLE IF NOT EXISTS \"%w_log\"("
    "seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, version INTEGER NOT NULL, "
    "at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS \"%w_feed\"("
    "consumer TEXT PRIMARY KEY, seq INTEGER NOT NULL DEFAULT 0, holder TEXT NOT NULL DEFAULT '', "
    "lease_until INTEGER NOT NULL DEFAULT 0);"
    "CREATE TRIGGER IF NOT EXISTS \"%w_li\" AFTER INSERT ON \"%w\" WHEN NEW.version <> 0 BEGIN "
    "INSERT INTO \"%w_log\"(key, version, at) VALUES (NEW.key, NEW.version, " SQL_NOW_MS "); END;"
    "CREATE TRIGGER IF NOT EXISTS \"%w_lu\" AFTER UPDATE ON \"%w\" "
    "WHEN NEW.version <> OLD.version BEGIN "
    "INSERT INTO \"%w_log\"(key, version, at) VALUES (NEW.key, NEW.version, " SQL_NOW_MS "); "
    "END;"
    /* A renamed key: the old one is gone, like a delete, with a fresh version. */
    "CREATE TRIGGER IF NOT EXISTS \"%w_lk\" AFTER UPDATE OF key ON \"%w\" "
    "WHEN NEW.key IS NOT OLD.key BEGIN "
    "UPDATE \"%w_seq\" SET v = v + 1 WHERE id = 1; "
    "INSERT INTO \"%w_log\"(key, version, at) "
    "VALUES (OLD.key, (SELECT v FROM \"%w_seq\" WHERE id = 1), " SQL_NOW_MS "); END;"
    "CREATE TRIGGER IF NOT EXISTS \"%w_ld\" AFTER DELETE ON \"%w\" BEGIN "
    "UPDATE \"%w_seq\" SET v = v + 1 WHERE id = 1; "
    "INSERT INTO \"%w_log\"(key, version, at) "
    "VALUES (OLD.key, (SELECT v FROM \"%w_seq\" WHERE id = 1), " SQL_NOW_MS "); END;";

/* Statement texts; each is given the table name twice, for up to two %w. */
static const char *const stmt_fmt[ST_COUNT] = {
    [ST_GET] = "SELECT value, version FROM \"%w\" WHERE key = ?1",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    /* Not UPDATE ... RETURNING: SQLite 3.40 runs a RETURNING statement through an ephemeral
     * table, which costs a put about 50 us on a 250 us durable commit (measured), and the
     * following SELECT reads the same row from the page just written. */
    [ST_BUMP] = "UPDATE \"%w_seq\" SET v = v + 1 WHERE id = 1",
    [ST_SEQ] = "SELECT v FROM \"%w_seq\" WHERE id = 1",
    [ST_UPSERT] = "INSERT INTO \"%w\"(key, value, version, updated_at) VALUES (?1, ?2, ?3, ?4) "
                  "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                  "version = excluded.version, updated_at = excluded.updated_at",
    [ST_DELETE] = "DELETE FROM \"%w\" WHERE key = ?1",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_FEED_READ] = "SELECT seq, key, version FROM \"%w_log\" WHERE seq > ?1 ORDER BY seq "
                     "LIMIT ?2",
    /* Taken when free, expired or already ours; RETURNING gives a row only then. */
    [ST_FEED_CLAIM] = "INSERT INTO \"%w_feed\"(consumer, seq, holder, lease_until) "
                      "VALUES (?1, 0, ?2, ?3) ON CONFLICT(consumer) DO UPDATE SET "
                      "holder = excluded.holder, lease_until = excluded.lease_until "
                      "WHERE holder = excluded.holder OR lease_until < ?4 RETURNING seq",
    [ST_FEED_COMMIT] = "UPDATE \"%w_feed\" SET seq = MAX(seq, ?3) "
                       "WHERE consumer = ?1 AND holder = ?2",
    [ST_FEED_RELEASE] = "UPDATE \"%w_feed\" SET lease_until = 0 "
                        "WHERE consumer = ?1 AND holder = ?2",
    [ST_FEED_TRIM] = "DELETE FROM \"%w_log\" WHERE at < ?1 AND seq <= "
                     "(SELECT COALESCE(MIN(seq), 0) FROM \"%w_feed\")",
    [ST_FEED_HOLDER] = "SELECT holder FROM \"%w_feed\" WHERE consumer = ?1",
    /* From a holder found dead, whatever its lease says. */
    [ST_FEED_TAKEOVER] = "UPDATE \"%w_feed\" SET holder = ?2, lease_until = ?3 "
                         "WHERE consumer = ?1 AND holder = ?4 RETURNING seq",
};

void tc__sqlite_finalize_all(sqlite3_stmt **st)
{
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(st[i]); /* NULL is a no-op */
        st[i] = NULL;
    }
}

/* Runs sql (one or more statements, no rows wanted); op names it in an error. */
static int exec(const sqlite_store *s, sqlite3 *db, const char *sql, const char *op)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return tc__sqlite_db_fail(s, db, op);
    return TC_OK;
}

static int set_wal(const sqlite_store *s, sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
        return tc__sqlite_db_fail(s, db, "journal_mode");
    int rc = TC_OK;
    /* Entering WAL needs an exclusive lock. When processes open a new file at once, each
     * holds a shared lock while it asks to upgrade, and SQLite answers SQLITE_BUSY at once
     * instead of calling the busy handler (waiting could deadlock). So this step is retried
     * here, within busy_timeout: the others finish and the mode is then already WAL. */
    int src, waited = 0, pause = 1;
    while ((src = sqlite3_step(st)) == SQLITE_BUSY && waited < s->busy_timeout_ms) {
        sqlite3_reset(st);
        sqlite3_sleep(pause);
        waited += pause;
        pause = pause < 32 ? pause * 2 : 32;
    }
    if (src != SQLITE_ROW) {
        rc = tc__sqlite_db_fail(s, db, "journal_mode");
    } else {
        /* "memory" for ":memory:": a private database with no file has no WAL to use. Any
         * other answer means WAL could not be entered (a filesystem without shared memory, a
         * temporary database): refuse, rather than run with other concurrency rules than the
         * documented ones. */
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        if (mode == NULL)
            rc = tc__sqlite_db_fail(s, db, "journal_mode");
        else if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0)
            rc = tc__err(s->base.owner, TC_ESTORE,
                         "sqlite %s: journal_mode: WAL unavailable (journal_mode is %s)", s->path,
                         mode);
    }
    sqlite3_finalize(st);
    return rc;
}

static int create_schema(const sqlite_store *s, sqlite3 *db)
{
    const char *t = s->table;
    char *sql = sqlite3_mprintf(schema_fmt, t, t, t, t, t, t, t, t, t, t, t, t, t, t);
    if (sql == NULL)
        return tc__err(s->base.owner, TC_ENOMEM, "sqlite %s: schema: out of memory", s->path);
    char *feed = sqlite3_mprintf(feed_schema_fmt, t, t, t, t, t, t, t, t, t, t, t, t, t, t, t,
                                 t, t, t, t);
    if (feed == NULL) {
        sqlite3_free(sql);
        return tc__err(s->base.owner, TC_ENOMEM, "sqlite %s: schema: out of memory", s->path);
    }
    int rc = exec(s, db, "BEGIN IMMEDIATE", "schema");
    if (rc == TC_OK)
        rc = exec(s, db, sql, "schema");
    if (rc == TC_OK)
        rc = exec(s, db, feed, "feed schema");
    sqlite3_free(feed);
    if (rc == TC_OK)
        rc = exec(s, db, "COMMIT", "schema");
    if (rc != TC_OK && !sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_free(sql);
    return rc;
}

static int prepare_all(const sqlite_store *s, sqlite3 *db, sqlite3_stmt **st)
{
    for (int i = 0; i < ST_COUNT; i++) {
        char *sql = sqlite3_mprintf(stmt_fmt[i], s->table, s->table);
        if (sql == NULL)
            return tc__err(s->base.owner, TC_ENOMEM, "sqlite %s: prepare: out of memory",
                           s->path);
        int src = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st[i], NULL);
        sqlite3_free(sql);
        if (src != SQLITE_OK)
            return tc__sqlite_db_fail(s, db, "prepare");
    }
    return TC_OK;
}

/* Opens s->db and prepares s->st. Called with *s->mu held, or before the store is shared.
 * On failure everything it made is released and s->db stays NULL. */
int tc__sqlite_conn_open(sqlite_store *s)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st[ST_COUNT] = {0};
    file_node *node = NULL;
    /* NOMUTEX: the connection is only used under *s->mu, so SQLite's per-connection mutex
     * would be a second lock taken for nothing. */
    int src = sqlite3_open_v2(s->path, &db,
                              SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                              NULL);
    int rc = src == SQLITE_OK ? TC_OK : tc__sqlite_db_fail(s, db, "open");
    if (rc == TC_OK) {
        /* Opening has created the file but read nothing through the -shm file yet, which is
         * where inherited state would first be used: check for it now. */
        const char *file = sqlite3_db_filename(db, "main");
        struct stat sb;
        if (file != NULL && file[0] != '\0') {
            if (stat(file, &sb) != 0)
                rc = tc__err(s->base.owner, TC_ESTORE, "sqlite %s: open: stat %s: %s", s->path,
                             file, strerror(errno));
            else
                rc = registry_enter(s, sb.st_dev, sb.st_ino, file, &node);
        }
    }
    if (rc == TC_OK) {
        sqlite3_extended_result_codes(db, 1);
        sqlite3_busy_timeout(db, s->busy_timeout_ms);
        rc = set_wal(s, db);
    }
    /* synchronous=FULL. In WAL mode NORMAL survives a crash of the process (a commit is in the
     * WAL file, in the OS page cache), but a power loss or kernel crash can undo the last
     * commits, because the WAL is synced only at checkpoints. The product promises that an
     * acknowledged put is in the database, so every commit syncs the WAL: one fsync per put.
     * Measured on the development VM (ext4 on virtio, 1000 puts of 100 bytes): FULL 0.25 ms
     * mean (0.22 median, 0.75 p99), NORMAL 0.08 ms mean (0.05 median); a disk whose cache
     * honours flushes costs more. Worth it for the promise; not worth a knob until asked. */
    if (rc == TC_OK)
        rc = exec(s, db, "PRAGMA synchronous=FULL", "synchronous");
    if (rc == TC_OK)
        rc = create_schema(s, db);
    if (rc == TC_OK)
        rc = prepare_all(s, db, st);
    if (rc != TC_OK) {
        /* A connection this process just opened: closing it is safe. */
        tc__sqlite_finalize_all(st);
        sqlite3_close_v2(db);
        tc__sqlite_registry_leave(node);
        return rc;
    }
    if (node != NULL)
        registry_record_shm(node);
    s->db = db;
    s->node = node;
    memcpy(s->st, st, sizeof st);
    return TC_OK;
}

/* ---- fork ----------------------------------------------------------------------------------- */

/*
 * The first call in a child (the generation changed) gives the store a new mutex and forgets
 * the inherited connection; enter then opens the child's own.
 *
 * The inherited connection is deliberately leaked, never closed: sqlite3_close in the child
 * would act on the parent's behalf. It would roll back whatever a parent thread had in flight
 * at fork time (in WAL mode that rewrites hash tables in the -shm file, which the child shares
 * with the parent through the inherited MAP_SHARED mapping), and a close that believes it is
 * the last connection checkpoints and deletes the WAL and -shm files under the parent. Its
 * statements stay reachable from it, and it goes to the graveyard.
 *
 * The inherited mutex is abandoned the same way: another parent thread may have held it at fork
 * time, and that thread does not exist in the child, so locking it could block forever.
 *
 * The child may already run several threads that race into their first call; they serialise
 * on s->fixing, a tag lock (see tag_lock for why not a mutex).
 */
int tc__sqlite_fork_fixup(sqlite_store *s, unsigned gen)
{
    int rc = TC_OK;
    tc__tag_lock(&s->fixing, gen);
    if (atomic_load_explicit(&s->gen, memory_order_acquire) != gen) {
        pthread_mutex_t *mu = malloc(sizeof *mu);
        if (mu == NULL || pthread_mutex_init(mu, NULL) != 0) {
            free(mu);
            rc = tc__err(s->base.owner, TC_ENOMEM, "sqlite %s: after fork: out of memory",
                         s->path);
        } else {
            tc__sqlite_bury(s->db, s->mu, -1);
            s->db = NULL;
            memset(s->st, 0, sizeof s->st); /* reachable from the buried connection */
            s->node = NULL;                 /* the ancestor's; its count stays as it was */
            s->mu = mu;
            /* The parent's waker is left as its mutex is (a parent thread may have held it);
             * without a new one, feed_wait only polls. */
            tc__sqlite_bury_waker(s->waker);
            s->waker = tc__sqlite_waker_new();
            atomic_store_explicit(&s->gen, gen, memory_order_release);
        }
    }
    tc__tag_unlock(&s->fixing);
    return rc;
}

/* Locks the store for one call and makes sure it has a connection of this process.
 * TC_OK with *s->mu held, or an error with it released. */
int tc__sqlite_enter(sqlite_store *s)
{
    unsigned gen = tc__fork_generation();
    if (atomic_load_explicit(&s->gen, memory_order_acquire) != gen) {
        int rc = tc__sqlite_fork_fixup(s, gen);
        if (rc != TC_OK)
            return rc;
    }
    pthread_mutex_lock(s->mu);
    if (s->db == NULL) {
        int rc = tc__sqlite_conn_open(s);
        if (rc != TC_OK) {
            pthread_mutex_unlock(s->mu);
            return rc;
        }
    }
    return TC_OK;
}

void tc__sqlite_leave(sqlite_store *s)
{
    pthread_mutex_unlock(s->mu);
}

/* ---- operations ----------------------------------------------------------------------------- */

int tc__sqlite_check_args(const sqlite_store *s, const char *key, size_t key_len)
{
    /* The orchestration checks keys before they get here; the store checks again because a
     * NUL or an over-long key would otherwise reach SQLite as a silently different key. */
    return tc__check_key(s->base.owner, key, key_len);
}

/* After a statement is used: reset it, and drop bindings that point into the caller's memory
 * (they are bound SQLITE_STATIC, without a copy, and the caller's memory is gone soon). */
void tc__sqlite_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* ---- the change feed ------------------------------------------------------------------------ */

waker *tc__sqlite_waker_new(void)
{
    waker *w = malloc(sizeof *w);
    if (w == NULL)
        return NULL;
    pthread_mutex_init(&w->mu, NULL);
    w->watch_fd = -1;
    w->watch_tried = 0;
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &a);
    pthread_condattr_destroy(&a);
    return w;
}

void tc__sqlite_waker_free(waker *w)
{
    if (w == NULL)
        return;
    if (w->watch_fd >= 0)
        close(w->watch_fd);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* After a commit: feed_wait's sleepers look at once. */
void tc__sqlite_wake(sqlite_store *s)
{
    atomic_fetch_add(&s->writes, 1);
    waker *w = s->waker;
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}
