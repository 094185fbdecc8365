/* tests/lib/testdir.c: temporary directories that tests create and remove. */
#include "tests/lib/testdir.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int testdir_make(char *buf, size_t cap)
{
    const char *base = getenv("TMPDIR");
    int n = snprintf(buf, cap, "%s/concord-test-XXXXXX", base != NULL ? base : "/tmp");

    if (n < 0 || (size_t)n >= cap)
        return -1;
    return mkdtemp(buf) != NULL ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void testdir_remove(const char *path)
{
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
