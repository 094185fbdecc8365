/* server/cli/output.c: -o json (indented), json-line (one compact line),
 * yaml (libyaml's emitter over the JSON value) and human-readable tables. */
#include "server/cli/cli_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

/* ---- YAML ---- */

/* Strings a YAML reader would take for another type must be quoted. */
static bool needs_quotes(const char *s)
{
    static const char *const words[] = {"true", "false", "yes", "no", "on",
                                        "off",  "null",  "~",   "y",  "n"};
    char *end;

    if (*s == '\0')
        return true;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (strcasecmp(s, words[i]) == 0)
            return true;
    }
    strtod(s, &end);
    return *end == '\0' || s[0] == '.' || s[0] == '+' || s[0] == '-';
}

static int emit_scalar(yaml_emitter_t *e, const char *text, bool is_string)
{
    yaml_event_t ev;
    bool is_plain = !is_string || !needs_quotes(text);

    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text, (int)strlen(text),
                                      is_plain, 1,
                                      is_string ? YAML_ANY_SCALAR_STYLE : YAML_PLAIN_SCALAR_STYLE))
        return -1;
    return yaml_emitter_emit(e, &ev) ? 0 : -1;
}

static int emit_value(yaml_emitter_t *e, const json_t *v)
{
    yaml_event_t ev;
    char buf[64];

    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *item;
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE) ||
            !yaml_emitter_emit(e, &ev))
            return -1;
        json_object_foreach((json_t *)v, key, item)
        {
            if (emit_scalar(e, key, true) != 0 || emit_value(e, item) != 0)
                return -1;
        }
        if (!yaml_mapping_end_event_initialize(&ev) || !yaml_emitter_emit(e, &ev))
            return -1;
        return 0;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *item;
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE) ||
            !yaml_emitter_emit(e, &ev))
            return -1;
        json_array_foreach(v, i, item)
        {
            if (emit_value(e, item) != 0)
                return -1;
        }
        if (!yaml_sequence_end_event_initialize(&ev) || !yaml_emitter_emit(e, &ev))
            return -1;
        return 0;
    }
    case JSON_STRING:
        return emit_scalar(e, json_string_value(v), true);
    case JSON_INTEGER:
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return emit_scalar(e, buf, false);
    case JSON_REAL:
        snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
        return emit_scalar(e, buf, false);
    case JSON_TRUE:
        return emit_scalar(e, "true", false);
    case JSON_FALSE:
        return emit_scalar(e, "false", false);
    case JSON_NULL:
        return emit_scalar(e, "null", false);
    }
    return -1;
}

static void print_yaml(FILE *f, const json_t *value)
{
    yaml_emitter_t e;
    yaml_event_t ev;
    int rv = -1;

    if (!yaml_emitter_initialize(&e))
        return;
    yaml_emitter_set_output_file(&e, f);
    yaml_emitter_set_unicode(&e, 1);
    if (yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) && yaml_emitter_emit(&e, &ev) &&
        yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) &&
        yaml_emitter_emit(&e, &ev) && emit_value(&e, value) == 0 &&
        yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(&e, &ev) &&
        yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(&e, &ev))
        rv = 0;
    if (rv != 0)
        fprintf(stderr, "Error: cannot write YAML: %s\n",
                e.problem != NULL ? e.problem : "out of memory");
    yaml_emitter_delete(&e);
}

void cli_print_value(const struct cli *cli, const json_t *value)
{
    switch (cli->output) {
    case CLI_OUTPUT_YAML:
        print_yaml(cli->out, value);
        break;
    case CLI_OUTPUT_JSON_LINE:
        json_dumpf(value, cli->out, JSON_COMPACT | JSON_ENCODE_ANY);
        fputc('\n', cli->out);
        break;
    case CLI_OUTPUT_JSON:
    case CLI_OUTPUT_TABLE:
        json_dumpf(value, cli->out, JSON_INDENT(2) | JSON_ENCODE_ANY);
        fputc('\n', cli->out);
        break;
    }
}

/* ---- tables ---- */

static const json_t *lookup(const json_t *row, const char *key)
{
    char part[64];

    while (row != NULL) {
        size_t n = strcspn(key, ".");
        if (n >= sizeof part)
            return NULL;
        memcpy(part, key, n);
        part[n] = '\0';
        row = json_object_get(row, part);
        if (key[n] == '\0')
            return row;
        key += n + 1;
    }
    return NULL;
}

void cli_cell_text(const json_t *v, char *buf, size_t cap)
{
    size_t n = 0;

    buf[0] = '\0';
    if (v == NULL)
        return;
    switch (json_typeof(v)) {
    case JSON_STRING:
        snprintf(buf, cap, "%s", json_string_value(v));
        break;
    case JSON_INTEGER:
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        snprintf(buf, cap, "%g", json_real_value(v));
        break;
    case JSON_TRUE:
        snprintf(buf, cap, "yes");
        break;
    case JSON_FALSE:
        snprintf(buf, cap, "no");
        break;
    case JSON_ARRAY: {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            char one[256];
            cli_cell_text(item, one, sizeof one);
            n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s", i > 0 ? "," : "", one);
            if (n >= cap)
                break;
        }
        break;
    }
    default: /* null, absent, objects */
        break;
    }
    /* A cell is one line: control characters would break the columns. */
    for (char *p = buf; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    }
}

#define CELL_BYTES 256

void cli_print_table(const struct cli *cli, const json_t *rows, const struct cli_column *cols,
                     size_t n_cols)
{
    size_t n_rows = json_array_size(rows), widths[16] = {0};
    char cell[CELL_BYTES];

    if (cli->output != CLI_OUTPUT_TABLE) {
        cli_print_value(cli, rows);
        return;
    }
    if (n_cols > 16)
        n_cols = 16;
    for (size_t c = 0; c < n_cols; c++)
        widths[c] = strlen(cols[c].title);
    for (size_t r = 0; r < n_rows; r++) {
        for (size_t c = 0; c < n_cols; c++) {
            cli_cell_text(lookup(json_array_get(rows, r), cols[c].key), cell, sizeof cell);
            if (strlen(cell) > widths[c])
                widths[c] = strlen(cell);
        }
    }
    for (size_t c = 0; c < n_cols; c++)
        fprintf(cli->out, "%-*s%s", c + 1 < n_cols ? (int)widths[c] : 0, cols[c].title,
                c + 1 < n_cols ? "  " : "\n");
    for (size_t r = 0; r < n_rows; r++) {
        for (size_t c = 0; c < n_cols; c++) {
            cli_cell_text(lookup(json_array_get(rows, r), cols[c].key), cell, sizeof cell);
            fprintf(cli->out, "%-*s%s", c + 1 < n_cols ? (int)widths[c] : 0, cell,
                    c + 1 < n_cols ? "  " : "\n");
        }
    }
}
