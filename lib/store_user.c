/* store_user.c - placeholder until the user store lands. */
#include "store.h"

int tc__store_user_open(tc__store **out, struct tc__user_store *def, const void *owner)
{
    (void)def;
    *out = NULL;
    return tc__err(owner, TC_ECONFIG, "store: user stores are not built yet");
}
void tc__user_store_ref(struct tc__user_store *def) { (void)def; }
void tc__user_store_unref(struct tc__user_store *def) { (void)def; }
