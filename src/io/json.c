#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64
/* Any document may use this much, so short ones are never refused. */
#define JSON_BASE_BUDGET 4096

/* What malloc adds to each allocation, counted against the budget. */
#define MALLOC_OVERHEAD 16

typedef struct parser {
    const char *s;
    size_t len, pos;
    char *err;
    size_t errlen;
    int failed;
    size_t allocated, budget; /* bytes */
    int bytes_per_byte;       /* budget per byte of text */
} parser;

static void fail(parser *p, const char *what)
{
    if (!p->failed)
        snprintf(p->err, p->errlen, "%s at byte %zu", what, p->pos);
    p->failed = 1;
}

/* Count an allocation of n bytes against the budget; 0 when over it. */
static int charge(parser *p, size_t n)
{
    if (n + MALLOC_OVERHEAD > p->budget - p->allocated) {
        if (!p->failed)
            snprintf(p->err, p->errlen, "needs more than %zu bytes of memory (%d per byte of text) at byte %zu",
                     p->budget, p->bytes_per_byte, p->pos);
        p->failed = 1;
        return 0;
    }
    p->allocated += n + MALLOC_OVERHEAD;
    return 1;
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static int hex4(parser *p, unsigned *out)
{
    unsigned v = 0;
    if (p->len - p->pos < 4) return 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes a string starting at the opening quote.  The decoded text is never
 * longer than the source, which bounds the allocation. */
static char *parse_string(parser *p)
{
    size_t start = ++p->pos, end = start;
    while (end < p->len && p->s[end] != '"') {
        if (p->s[end] == '\\') end++;
        end++;
    }
    if (end >= p->len) { fail(p, "unterminated string"); return NULL; }
    if (!charge(p, end - start + 1)) return NULL;
    char *out = malloc(end - start + 1);
    if (!out) { fail(p, "out of memory"); return NULL; }
    size_t o = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos++];
        if (c < 0x20) { fail(p, "control character in string"); free(out); return NULL; }
        if (c != '\\') { out[o++] = (char)c; continue; }
        char e = p->s[p->pos++];
        switch (e) {
        case '"': out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; break;
        case '/': out[o++] = '/'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (!hex4(p, &cp)) { fail(p, "bad \\u escape"); free(out); return NULL; }
            /* strings are read as C strings: a NUL would silently end one */
            if (cp == 0) { fail(p, "\\u0000 in a string"); free(out); return NULL; }
            if (cp >= 0xD800 && cp < 0xDC00 && p->pos + 6 <= end && p->s[p->pos] == '\\' &&
                p->s[p->pos + 1] == 'u') {
                size_t at = p->pos;
                p->pos += 2;
                if (hex4(p, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else p->pos = at; /* not a pair: the next escape stands alone */
            }
            if (cp >= 0xDC80 && cp <= 0xDCFF) {
                out[o++] = (char)(cp - 0xDC00); /* a byte that was not UTF-8, as dm_json_write_string escapes it */
            } else {
                if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* a lone surrogate is no character */
                o += put_utf8(out + o, cp); /* 6+ source bytes -> at most 4 */
            }
            break;
        }
        default: fail(p, "bad escape"); free(out); return NULL;
        }
    }
    out[o] = '\0';
    p->pos = end + 1;
    return out;
}

static dm_json *parse_value(parser *p, int depth);

static dm_json *new_node(parser *p, dm_json_type type)
{
    if (!charge(p, sizeof(dm_json))) return NULL;
    dm_json *v = calloc(1, sizeof *v);
    if (!v) fail(p, "out of memory");
    else v->type = type;
    return v;
}

static int literal(parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos >= n && memcmp(p->s + p->pos, word, n) == 0) {
        p->pos += n;
        return 1;
    }
    return 0;
}

static dm_json *parse_number(parser *p)
{
    size_t start = p->pos;
    int integer = 1;
    /* JSON's grammar exactly: no leading zeros, digits after '.' and
     * after the exponent's 'e' */
    if (p->pos < p->len && p->s[p->pos] == '-') p->pos++;
    size_t digits = p->pos;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    if (p->pos == digits || (p->s[digits] == '0' && p->pos - digits > 1)) { fail(p, "bad number"); return NULL; }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        integer = 0;
        digits = ++p->pos;
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
        if (p->pos == digits) { fail(p, "bad number: no digits after '.'"); return NULL; }
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        integer = 0;
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        digits = p->pos;
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
        if (p->pos == digits) { fail(p, "bad number: no digits in the exponent"); return NULL; }
    }
    char buf[64];
    size_t n = p->pos - start;
    if (n >= sizeof buf) { fail(p, "number too long"); return NULL; }
    memcpy(buf, p->s + start, n);
    buf[n] = '\0';
    dm_json *v = new_node(p, DM_JSON_NUMBER);
    if (!v) return NULL;
    v->number = strtod(buf, NULL);
    if (integer) {
        errno = 0;
        long long ll = strtoll(buf, NULL, 10);
        v->is_integer = errno == 0;
        v->integer = ll;
    }
    return v;
}

static dm_json *parse_container(parser *p, int depth, int object)
{
    dm_json *v = new_node(p, object ? DM_JSON_OBJECT : DM_JSON_ARRAY);
    if (!v) return NULL;
    dm_json **tail = &v->child;
    char close = object ? '}' : ']';
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; return v; }
    for (;;) {
        char *key = NULL;
        skip_ws(p);
        if (object) {
            if (p->pos >= p->len || p->s[p->pos] != '"') { fail(p, "expected member name"); break; }
            key = parse_string(p);
            if (!key) break;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') { free(key); fail(p, "expected ':'"); break; }
            p->pos++;
        }
        dm_json *item = parse_value(p, depth + 1);
        if (!item) { free(key); break; }
        item->key = key;
        *tail = item;
        tail = &item->next;
        v->count++;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; return v; }
        fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
        break;
    }
    dm_json_free(v);
    return NULL;
}

static dm_json *parse_value(parser *p, int depth)
{
    if (depth > MAX_DEPTH) { fail(p, "nesting too deep"); return NULL; }
    skip_ws(p);
    if (p->pos >= p->len) { fail(p, "unexpected end"); return NULL; }
    char c = p->s[p->pos];
    if (c == '{') return parse_container(p, depth, 1);
    if (c == '[') return parse_container(p, depth, 0);
    if (c == '"') {
        char *s = parse_string(p);
        if (!s) return NULL;
        dm_json *v = new_node(p, DM_JSON_STRING);
        if (!v) { free(s); return NULL; }
        v->string = s;
        return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p);
    if (literal(p, "true")) { dm_json *v = new_node(p, DM_JSON_BOOL); if (v) v->boolean = 1; return v; }
    if (literal(p, "false")) return new_node(p, DM_JSON_BOOL);
    if (literal(p, "null")) return new_node(p, DM_JSON_NULL);
    fail(p, "unexpected character");
    return NULL;
}

dm_json *dm_json_parse_bounded(const char *text, size_t len, int bytes_per_byte, char *err, size_t errlen)
{
    parser p = {text, len, 0, err, errlen, 0, 0, 0, bytes_per_byte};
    size_t per_byte = (size_t)bytes_per_byte;
    p.budget = JSON_BASE_BUDGET + (len < SIZE_MAX / per_byte ? len * per_byte : SIZE_MAX - JSON_BASE_BUDGET);
    dm_json *v = parse_value(&p, 0);
    if (v) {
        skip_ws(&p);
        if (p.pos != len) {
            fail(&p, "trailing characters");
            dm_json_free(v);
            v = NULL;
        }
    }
    return v;
}

int dm_json_out_of_memory(const char *err) { return strncmp(err, "out of memory", 13) == 0; }

dm_json *dm_json_parse(const char *text, size_t len, char *err, size_t errlen)
{
    return dm_json_parse_bounded(text, len, DM_JSON_BYTES_PER_BYTE, err, errlen);
}

void dm_json_free(dm_json *value)
{
    while (value) {
        dm_json *next = value->next;
        dm_json_free(value->child);
        free(value->key);
        free(value->string);
        free(value);
        value = next;
    }
}

const dm_json *dm_json_get(const dm_json *object, const char *key)
{
    if (!object || object->type != DM_JSON_OBJECT) return NULL;
    for (const dm_json *m = object->child; m; m = m->next)
        if (strcmp(m->key, key) == 0) return m;
    return NULL;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_length(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (n < 2) return n;
    unsigned lo = 0x80, hi = 0xBF; /* the second byte's range */
    if (c == 0xE0) lo = 0xA0;
    else if (c == 0xED) hi = 0x9F;
    else if (c == 0xF0) lo = 0x90;
    else if (c == 0xF4) hi = 0x8F;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return n;
}

int dm_json_write_string(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    int ok = fputc('"', f) != EOF;
    while (*p && ok) {
        size_t n = utf8_length(p);
        if (*p == '"' || *p == '\\') ok = fprintf(f, "\\%c", *p) >= 0;
        else if (*p < 0x20 || *p == 0x7F) ok = fprintf(f, "\\u%04x", *p) >= 0;
        else if (!n) ok = fprintf(f, "\\udc%02x", *p) >= 0; /* as Python's surrogateescape */
        else ok = fwrite(p, 1, n, f) == n;
        p += n ? n : 1;
    }
    return ok && fputc('"', f) != EOF;
}

int dm_json_write_number(FILE *f, const char *format, double v)
{
    if (!isfinite(v)) return fputs("null", f) != EOF;
    return fprintf(f, format, v) >= 0;
}
