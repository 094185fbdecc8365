/* tests/fuzz/config.c: arbitrary bytes into the configuration parser, from
 * memory. Property: whatever parses prints as YAML that parses again to a
 * configuration printing the very same text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *print_to_string(const struct config *cfg, size_t *len)
{
    char *text = NULL;
    FILE *out = open_memstream(&text, len);

    if (out == NULL)
        abort();
    config_print(cfg, out);
    fclose(out);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config *cfg;
    struct config *again;
    char errmsg[256];
    char *first;
    char *second;
    size_t first_len;
    size_t second_len;

    if (config_parse("fuzz.yaml", (const char *)data, size, &cfg, errmsg) != 0)
        return 0;
    first = print_to_string(cfg, &first_len);
    if (config_parse("printed.yaml", first, first_len, &again, errmsg) != 0) {
        fprintf(stderr, "printed config does not parse: %s\n%s", errmsg, first);
        abort();
    }
    second = print_to_string(again, &second_len);
    if (first_len != second_len || memcmp(first, second, first_len) != 0)
        abort();
    free(first);
    free(second);
    config_free(cfg);
    config_free(again);
    return 0;
}
