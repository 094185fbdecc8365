/* server/control/idmap.c: the uint64 -> uint64 map of control_internal.h:
 * open addressing with linear probing, at most half full, deletion by
 * backward shift (no tombstones). Keys are node or user ids, never 0. */
#include "server/control/control_internal.h"

#include <stdlib.h>

static size_t slot_of(uint64_t key, size_t cap)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

bool ctl_idmap_get(const struct ctl_idmap *m, uint64_t key, uint64_t *val)
{
    if (m->cap == 0 || key == 0)
        return false;
    for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == 0)
            return false;
        if (m->keys[i] == key) {
            *val = m->vals[i];
            return true;
        }
    }
}

static void insert(uint64_t *keys, uint64_t *vals, size_t cap, uint64_t key, uint64_t val)
{
    size_t i = slot_of(key, cap);

    while (keys[i] != 0 && keys[i] != key)
        i = (i + 1) & (cap - 1);
    keys[i] = key;
    vals[i] = val;
}

static int grow(struct ctl_idmap *m)
{
    size_t cap = m->cap == 0 ? 16 : m->cap * 2;
    uint64_t *keys = calloc(cap, sizeof *keys);
    uint64_t *vals = calloc(cap, sizeof *vals);

    if (keys == NULL || vals == NULL) {
        free(keys);
        free(vals);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] != 0)
            insert(keys, vals, cap, m->keys[i], m->vals[i]);
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return 0;
}

int ctl_idmap_put(struct ctl_idmap *m, uint64_t key, uint64_t val)
{
    uint64_t old;

    if (key == 0)
        return -1;
    if (ctl_idmap_get(m, key, &old)) {
        insert(m->keys, m->vals, m->cap, key, val);
        return 0;
    }
    if ((m->n + 1) * 2 > m->cap && grow(m) != 0)
        return -1;
    insert(m->keys, m->vals, m->cap, key, val);
    m->n++;
    return 0;
}

void ctl_idmap_del(struct ctl_idmap *m, uint64_t key)
{
    size_t i;
    size_t mask = m->cap - 1;

    if (m->cap == 0 || key == 0)
        return;
    for (i = slot_of(key, m->cap); m->keys[i] != key; i = (i + 1) & mask) {
        if (m->keys[i] == 0)
            return;
    }
    m->keys[i] = 0;
    m->n--;
    /* Shift back every entry of the run that the hole would hide. */
    for (size_t j = (i + 1) & mask; m->keys[j] != 0; j = (j + 1) & mask) {
        size_t home = slot_of(m->keys[j], m->cap);
        bool is_between = i <= j ? (i < home && home <= j) : (i < home || home <= j);

        if (!is_between) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            m->keys[j] = 0;
            i = j;
        }
    }
}

void ctl_idmap_free(struct ctl_idmap *m)
{
    free(m->keys);
    free(m->vals);
    m->keys = NULL;
    m->vals = NULL;
    m->cap = 0;
    m->n = 0;
}
