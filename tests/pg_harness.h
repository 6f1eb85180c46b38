/*
 * pg_harness.h - a private PostgreSQL server for tests and benchmarks: initdb in a fresh temp
 * dir, a postmaster on a free loopback port (and a unix socket in the same dir), stopped and
 * removed afterwards. As root (CI), initdb and the server run as the `postgres` system user,
 * since both refuse to run as root.
 */
#ifndef TC_PG_HARNESS_H
#define TC_PG_HARNESS_H

#include <sys/types.h>

typedef struct tct_pg {
    int port;
    pid_t pid;          /* the postmaster; 0 when not running */
    int durable;        /* started with fsync on (tct_pg_start_opts) */
    char dir[256];      /* dir/data is the cluster, dir/server.log its log, dir the socket dir */
    char conninfo[256]; /* host=127.0.0.1 port=... dbname=postgres user=postgres */
} tct_pg;

/* 1 when the server binaries (initdb, postgres) are installed, else 0. tct_pg_bindir gives
 * their dir ("" if none): TCT_PG_BINDIR if set, else the newest /usr/lib/postgresql/N/bin. */
int tct_pg_available(void);
const char *tct_pg_bindir(void);
/* initdb and start, with fsync off (fast; a test server needs no crash safety); waits until it
 * accepts connections (30 s at most). 0 on success; on failure prints why on stderr. */
int tct_pg_start(tct_pg *p);
/* The same; durable: fsync on (production-like commits, for benchmarks). */
int tct_pg_start_opts(tct_pg *p, int durable);
/* Stops the postmaster (fast shutdown: every backend is told and ends), keeping dir and port,
 * then starts it again on the same port: clients see their connections dropped. 0 on success. */
int tct_pg_restart(tct_pg *p);
/* Stops it (if running) and removes its dir. */
void tct_pg_stop(tct_pg *p);

#endif
