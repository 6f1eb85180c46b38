/* store_pg.c - placeholder until the PostgreSQL store lands. */
#include "store.h"

int tc__store_pg_open(tc__store **out, const char *conninfo, const char *table, int64_t pool_size,
                      const void *owner)
{
    (void)conninfo, (void)table, (void)pool_size;
    *out = NULL;
    return tc__err(owner, TC_ECONFIG, "store: postgres is not built yet");
}
