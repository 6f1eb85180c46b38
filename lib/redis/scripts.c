/*
 * scripts.c - the Redis tier's server-side scripts: each is one atomic step (a guarded write, a
 * settle of journalled keys, a tag index change, the miss lease), sent as EVALSHA and, when the
 * server does not know it yet (NOSCRIPT), as EVAL.
 */
#include "redis/tier_impl.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- server-side scripts ------------------------------------------------------------------ */

/* Every write goes through the guard script, so that Redis never goes back in time: a late
 * read-through fill of v1 landing after a put of v2 (or after the tombstone of a delete) is
 * refused there, atomically, instead of overwriting the newer state (invariant 2). */
static const char guard_script[] =
    "-- KEYS[1] the key, ARGV[1] the envelope, ARGV[2] PX ms, ARGV[3] (optional) '1' to keep an\n"
    "-- equal version too, ARGV[4] and ARGV[5] (optional) a channel and a message to PUBLISH\n"
    "-- after the write (a write's bus message: one round trip for both, in this order). Writes\n"
    "-- unless the key holds a newer version (value or tombstone) in our format; anything else\n"
    "-- there (another type, a foreign value) is overwritten. Returns 1 if written, else 0; the\n"
    "-- message goes either way. Versions are compared byte by byte (big-endian bytes 4..11):\n"
    "-- Lua's string < uses strcoll, which depends on the server's locale.\n"
    "local function allowed()\n"
    "  local cur = false\n"
    "  if redis.call('TYPE', KEYS[1]).ok == 'string' then cur = redis.call('GET', KEYS[1]) end\n"
    "  if cur and #cur >= 19 and string.sub(cur, 1, 2) == string.sub(ARGV[1], 1, 2) then\n"
    "    for i = 4, 11 do\n"
    "      local a, b = string.byte(cur, i), string.byte(ARGV[1], i)\n"
    "      if a ~= b then return a < b end\n"
    "    end\n"
    "    return ARGV[3] ~= '1'\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "local n = 0\n"
    "if allowed() then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "  n = 1\n"
    "end\n"
    "if ARGV[4] then redis.call('PUBLISH', ARGV[4], ARGV[5]) end\n"
    "return n\n";
/* Invalidations, and the journal's replay, go through the settle script: it takes values out
 * of service but leaves a tombstone carrying their version (see its comment). The rule lives
 * once, in this Lua function, which the tag-drop script shares. */
#define SETTLE_LUA_FN                                                                         \
    "local function newer(a, b)\n"                                                            \
    "  for i = 1, 8 do\n"                                                                     \
    "    local x, y = string.byte(a, i), string.byte(b, i)\n"                                 \
    "    if x ~= y then return x > y end\n"                                                   \
    "  end\n"                                                                                 \
    "  return false\n"                                                                        \
    "end\n"                                                                                   \
    "-- Settles key k, not below version want ('' if none is known); ARGV[1..3] as for the\n" \
    "-- settle script. Returns 1 if a value was taken out, else 0.\n"                         \
    "local function settle(k, want)\n"                                                        \
    "  local t = redis.call('TYPE', k).ok\n"                                                  \
    "  local kind, ver = nil, nil\n"                                                          \
    "  if t == 'string' then\n"                                                               \
    "    local h = redis.call('GETRANGE', k, 0, 10)\n"                                        \
    "    if #h == 11 and string.sub(h, 1, 2) == ARGV[1] then\n"                               \
    "      kind, ver = string.sub(h, 3, 3), string.sub(h, 4, 11)\n"                           \
    "    end\n"                                                                               \
    "  end\n"                                                                                 \
    "  local target = ver\n"                                                                  \
    "  if want ~= '' and (target == nil or newer(want, target)) then target = want end\n"     \
    "  if kind == 'X' and target == ver then\n"                                               \
    "    -- already a tombstone at least that new\n"                                          \
    "  elseif target ~= nil then\n"                                                           \
    "    redis.call('SET', k, ARGV[1] .. 'X' .. target .. ARGV[3], 'PX', ARGV[2])\n"          \
    "  elseif t ~= 'none' then\n"                                                             \
    "    redis.call('DEL', k)\n"                                                              \
    "  end\n"                                                                                 \
    "  if t ~= 'none' and kind ~= 'X' then return 1 end\n"                                    \
    "  return 0\n"                                                                            \
    "end\n"
static const char settle_script[] =
    "-- Takes KEYS out of service without forgetting their versions. ARGV[1]: the envelope's first\n"
    "-- two bytes; ARGV[2]: PX ms for tombstones; ARGV[3]: their expiry (8 bytes); ARGV[3 + i]: a\n"
    "-- version (8 bytes, big-endian) that KEYS[i] must not go below, or '' if none is known.\n"
    "-- A value of ours becomes a tombstone of max(its version, the given one), so a late fill of an\n"
    "-- older version is still refused; a tombstone stays (raised to the given version); anything\n"
    "-- else is deleted, or replaced by a tombstone when a version is given. Returns how many\n"
    "-- values were taken out. Versions are compared byte by byte: Lua's string < uses strcoll.\n"
    SETTLE_LUA_FN
    "local n = 0\n"
    "for i, k in ipairs(KEYS) do n = n + settle(k, ARGV[3 + i]) end\n"
    "return n\n";
/* Tagging is one script so that a set's TTL can be raised but never lowered in one round trip
 * on any server version (PEXPIRE ... GT needs Redis 7). */
static const char tag_script[] =
    "-- KEYS: tag sets; ARGV[1]: a member (a key without the namespace); ARGV[2]: PX ms.\n"
    "-- Adds the member to every set and makes the set live at least ARGV[2] ms from now: a\n"
    "-- longer TTL is kept, and so is none (such a set outlives any TTL). Anything but a set\n"
    "-- under a set's name (only a foreign writer can put it there) is replaced. Returns the\n"
    "-- number of sets.\n"
    "local ttl = tonumber(ARGV[2])\n"
    "for _, k in ipairs(KEYS) do\n"
    "  local t = redis.call('TYPE', k).ok\n"
    "  if t ~= 'set' and t ~= 'none' then redis.call('DEL', k) end\n"
    "  redis.call('SADD', k, ARGV[1])\n"
    "  local left = redis.call('PTTL', k)\n"
    "  if t ~= 'set' or (left >= 0 and left < ttl) then redis.call('PEXPIRE', k, ARGV[2]) end\n"
    "end\n"
    "return #KEYS\n";
/* One batch of a tag invalidation: membership and settling change together, so a key leaves
 * its tag's set only when its value has been taken out. */
static const char tag_drop_script[] =
    "-- KEYS[1]: a tag set; KEYS[i] (i >= 2): the key (namespace + member) of member ARGV[2 + i];\n"
    "-- ARGV[1..3] as for the settle script; ARGV[3 + #KEYS] and after: members that name no key\n"
    "-- of ours (only a foreign writer can add them), just removed. A member still in the set is\n"
    "-- settled, then removed: if the script fails part-way, what is left stays in the set for\n"
    "-- the next try. Returns how many values were taken out.\n"
    SETTLE_LUA_FN
    "local n = 0\n"
    "for i = 2, #KEYS do\n"
    "  if redis.call('SISMEMBER', KEYS[1], ARGV[2 + i]) == 1 then\n"
    "    n = n + settle(KEYS[i], '')\n"
    "    redis.call('SREM', KEYS[1], ARGV[2 + i])\n"
    "  end\n"
    "end\n"
    "for i = 3 + #KEYS, #ARGV do redis.call('SREM', KEYS[1], ARGV[i]) end\n"
    "return n\n";

/* The miss lease (tc__redis_lease): reading the key and taking the lease are one atomic step,
 * so a process never takes a lease for a key another process filled a moment before. */
static const char lease_script[] =
    "-- KEYS[1] the key, KEYS[2] its lease; ARGV[1] the first three bytes of a live value of\n"
    "-- ours; ARGV[2] a token; ARGV[3] the lease's PX ms; ARGV[4] the caller's clock (unix ms,\n"
    "-- 8 bytes big-endian). Returns the key's value when it holds one that is live by the\n"
    "-- caller's clock (its expiry, bytes 12..19, is later: the caller judges the reply by the\n"
    "-- same clock, so a value the caller would take for expired never stands in for the lease;\n"
    "-- an HTTP record, kind byte 20, also needs its fresh_until, bytes 30..37, later and its\n"
    "-- no-cache flag, bit 1 of byte 21, clear: a stale copy kept for stale-if-error or\n"
    "-- store.stale_window_ms is what a reader holding it takes the lease to replace); else 1\n"
    "-- after taking the lease, or 0 when another holder has it. Byte by byte: Lua's string <\n"
    "-- uses strcoll.\n"
    "local function later(a, b)\n"
    "  for i = 1, 8 do\n"
    "    local x, y = string.byte(a, i), string.byte(b, i)\n"
    "    if x ~= y then return x > y end\n"
    "  end\n"
    "  return false\n"
    "end\n"
    "if redis.call('TYPE', KEYS[1]).ok == 'string' then\n"
    "  local v = redis.call('GET', KEYS[1])\n"
    "  if #v >= 20 and string.sub(v, 1, 3) == ARGV[1] and later(string.sub(v, 12, 19), ARGV[4])\n"
    "    and (string.sub(v, 20, 20) ~= 'H' or (#v >= 37 and string.byte(v, 21) % 4 < 2\n"
    "      and later(string.sub(v, 30, 37), ARGV[4])))\n"
    "  then return v end\n"
    "end\n"
    "if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end\n"
    "return 0\n";
static const char unlease_script[] =
    "-- KEYS[1] a lease, ARGV[1] the token that took it: released only by its holder, so a\n"
    "-- holder whose lease expired never releases the next one's.\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

/* SHA1s for EVALSHA; a test checks them against SCRIPT LOAD. */
static const struct script {
    const char *text;
    size_t len;
    const char *sha;
} scripts[] = {
    [TC__SCRIPT_GUARD] = {guard_script, sizeof guard_script - 1,
                           "96dbfcd990ced1273d0b7e6468d70f703ef1ce0b"},
    [TC__SCRIPT_SETTLE] = {settle_script, sizeof settle_script - 1,
                           "091c6f70559231514de9c39d932bb3d1fc521b98"},
    [TC__SCRIPT_TAG] = {tag_script, sizeof tag_script - 1,
                        "6c9e651a262969742614f4026a80aac00265d269"},
    [TC__SCRIPT_TAG_DROP] = {tag_drop_script, sizeof tag_drop_script - 1,
                             "ef4cd91f7f4e4b3cd93c278fbeefe9c459d471da"},
    [TC__SCRIPT_LEASE] = {lease_script, sizeof lease_script - 1,
                          "680d6eb1e66e8134659adf593ef7a3c39c5f154f"},
    [TC__SCRIPT_UNLEASE] = {unlease_script, sizeof unlease_script - 1,
                            "77538aa0a3dc29692e0b9a026543c937d5d6abeb"},
};
_Static_assert(sizeof scripts / sizeof scripts[0] == TC__SCRIPT_COUNT, "one entry per script");

void tc__rt_script_head(int which, int eval, const char **argv, size_t *lens)
{
    argv[0] = eval ? "EVAL" : "EVALSHA";
    lens[0] = eval ? 4 : 7;
    argv[1] = eval ? scripts[which].text : scripts[which].sha;
    lens[1] = eval ? scripts[which].len : 40;
}

int tc__rt_is_noscript(const redisReply *rep)
{
    return rep != NULL && rep->type == REDIS_REPLY_ERROR && rep->len >= 8 &&
           memcmp(rep->str, "NOSCRIPT", 8) == 0;
}

int tc__redis_script(int which, const char **out_text, const char **out_sha)
{
    if (which < 0 || which >= (int)(sizeof scripts / sizeof scripts[0]))
        return TC_EINVAL;
    *out_text = scripts[which].text;
    *out_sha = scripts[which].sha;
    return TC_OK;
}

/* Runs a script on c with EVALSHA, and with EVAL once when the server does not know it (a
 * restart or SCRIPT FLUSH empties its cache; EVAL caches it again). rest is what follows the
 * script in the command: numkeys, keys, args. NULL with c->err set when the connection failed,
 * or with c->err == 0 when out of memory. */
redisReply *tc__rt_conn_eval(redisContext *c, int which, int nrest, const char **rest,
                             const size_t *rest_lens)
{
    size_t n = (size_t)nrest + 2;
    const char **argv = malloc(n * sizeof *argv);
    size_t *lens = malloc(n * sizeof *lens);
    redisReply *rep = NULL;
    if (argv != NULL && lens != NULL) {
        memcpy(argv + 2, rest, (size_t)nrest * sizeof *argv);
        memcpy(lens + 2, rest_lens, (size_t)nrest * sizeof *lens);
        tc__rt_script_head(which, 0, argv, lens);
        rep = tc__resp_command(c, (int)n, argv, lens);
        if (tc__rt_is_noscript(rep)) {
            freeReplyObject(rep);
            tc__rt_script_head(which, 1, argv, lens);
            rep = tc__resp_command(c, (int)n, argv, lens);
        }
    }
    free(argv);
    free(lens);
    return rep;
}
