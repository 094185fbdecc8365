/* tests/lib/testdir.h: per-test temporary directories. */
#ifndef CONCORD_TESTS_LIB_TESTDIR_H
#define CONCORD_TESTS_LIB_TESTDIR_H

#include <stddef.h>

/* Creates a fresh directory under $TMPDIR (or /tmp) and writes its path into
 * buf. Returns 0 or -1. */
int testdir_make(char *buf, size_t cap);
/* Removes the directory and everything below it. */
void testdir_remove(const char *path);

#endif
