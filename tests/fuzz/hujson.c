/* tests/fuzz/hujson.c: arbitrary bytes into the HuJSON policy checker.
 * Properties checked: it never reads outside the input (ASan), an error
 * always carries a position inside the input (line >= 1, column >= 1) and a
 * message, and the verdict does not depend on bytes after the input (the
 * parser is given an exact length, never a NUL-terminated string). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/admin/hujson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct admin_hujson_error err;
    struct admin_hujson_error again;
    char *padded;
    int rv;

    memset(&err, 0, sizeof err);
    rv = admin_hujson_check((const char *)data, size, &err);
    if (rv != 0) {
        assert(rv == -1);
        assert(err.line >= 1 && err.col >= 1);
        assert(err.message[0] != '\0');
        assert(err.line <= size + 1 && err.col <= size + 1);
    }
    /* Trailing garbage past `size` must not change the verdict. */
    padded = malloc(size + 2);
    if (padded == NULL)
        return 0;
    if (size > 0)
        memcpy(padded, data, size);
    padded[size] = '}';
    padded[size + 1] = '"';
    assert(admin_hujson_check(padded, size, &again) == rv);
    free(padded);
    return 0;
}
