/* unpickle.c - a pickle virtual machine that only builds data.
 *
 * Every value comes from an arena freed at once; all lengths are checked
 * against the remaining input, memo indices against the input size, and the
 * stack against its current mark, so hostile input ends in an error that
 * names the byte, never in a crash.  Everything allocated is counted
 * against a budget of DM_PICKLE_BYTES_PER_BYTE per input byte (plus one
 * block of values), so no input can cost more.  Nothing recurses, so deep
 * nesting cannot exhaust the C stack. */
#include "unpickle.h"

#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_VALUES 1024
#define HIGHEST_PROTOCOL 5

struct pk_block {
    pk_block *next;
    size_t used;
    pk_value values[BLOCK_VALUES];
};

typedef struct unpickler {
    const unsigned char *buf, *p, *end;
    size_t allocated, budget; /* bytes */
    dm_pickle *out;
    pk_value **stack;
    size_t depth, stack_cap;
    size_t *marks;
    size_t mark_count, marks_cap;
    pk_value **memo; /* NULL where unset */
    size_t memo_cap, memo_set;
    size_t op_at;
    unsigned char op;
} unpickler;

static dm_status bad(const unpickler *u, const char *fmt, ...) DM_PRINTF(2, 3);
static dm_status bad(const unpickler *u, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dm_fail(DM_ERR_FORMAT, "data.pkl byte %zu (opcode 0x%02x): %s", u->op_at, u->op, msg);
}

static dm_status out_of_memory(void) { return dm_fail(DM_ERR_NOMEM, "out of memory unpickling"); }

/* Count bytes against the budget. */
static dm_status charge(unpickler *u, size_t bytes)
{
    if (bytes > u->budget - u->allocated)
        return bad(u, "the pickle needs more than %zu bytes of memory (%d per byte of input)", u->budget,
                   DM_PICKLE_BYTES_PER_BYTE);
    u->allocated += bytes;
    return DM_OK;
}

/* What malloc adds to a new allocation (glibc's smallest chunk is 32). */
#define MALLOC_OVERHEAD 32

/* Make room for `need` elements of `size` bytes in *array: exactly need at
 * first, doubling afterwards. */
static dm_status grow(unpickler *u, void *array, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) return DM_OK;
    size_t n = *cap ? *cap : need;
    while (n < need) n *= 2;
    dm_status st = charge(u, (n - *cap) * size + (*cap ? 0 : MALLOC_OVERHEAD));
    if (st) return st;
    void *p = realloc(*(void **)array, n * size);
    if (!p) return out_of_memory();
    *(void **)array = p;
    *cap = n;
    return DM_OK;
}

/* A value from the arena. */
static dm_status new_value(unpickler *u, pk_kind kind, pk_value **v)
{
    pk_block *b = u->out->blocks;
    if (!b || b->used == BLOCK_VALUES) {
        dm_status st = charge(u, sizeof *b);
        if (st) return st;
        if (!(b = calloc(1, sizeof *b))) return out_of_memory();
        b->next = u->out->blocks;
        u->out->blocks = b;
    }
    *v = &b->values[b->used++];
    (*v)->kind = kind;
    return DM_OK;
}

static dm_status push(unpickler *u, pk_value *v)
{
    dm_status st = grow(u, &u->stack, &u->stack_cap, u->depth + 1, sizeof *u->stack);
    if (st) return st;
    u->stack[u->depth++] = v;
    return DM_OK;
}

static dm_status push_new(unpickler *u, pk_kind kind)
{
    pk_value *v = NULL;
    dm_status st = new_value(u, kind, &v);
    return st ? st : push(u, v);
}

static size_t fence(const unpickler *u) { return u->mark_count ? u->marks[u->mark_count - 1] : 0; }

static dm_status pop(unpickler *u, pk_value **v)
{
    if (u->depth <= fence(u)) return bad(u, "stack underflow");
    *v = u->stack[--u->depth];
    return DM_OK;
}

static dm_status top(unpickler *u, pk_value **v)
{
    if (u->depth <= fence(u)) return bad(u, "stack underflow");
    *v = u->stack[u->depth - 1];
    return DM_OK;
}

/* Pop everything above the last mark: the items are stack[*base..*base+*n). */
static dm_status pop_mark(unpickler *u, size_t *base, size_t *n)
{
    if (!u->mark_count) return bad(u, "no mark on the stack");
    *base = u->marks[--u->mark_count];
    *n = u->depth - *base;
    u->depth = *base;
    return DM_OK;
}

static dm_status add_items(unpickler *u, pk_value *to, pk_value *const *items, size_t n)
{
    if (to->kind == PK_OBJECT) return DM_OK;
    if (to->kind != PK_LIST && to->kind != PK_DICT) return bad(u, "items added to something not a list or dict");
    if (to->kind == PK_DICT && n % 2) return bad(u, "odd number of dict keys and values");
    if (n == 0) return DM_OK;
    dm_status st = grow(u, &to->items, &to->cap, to->count + n, sizeof *to->items);
    if (st) return st;
    memcpy(to->items + to->count, items, n * sizeof *items);
    to->count += n;
    return DM_OK;
}

/* A new container holding items. */
static dm_status push_container(unpickler *u, pk_kind kind, pk_value *const *items, size_t n)
{
    pk_value *v = NULL;
    dm_status st = new_value(u, kind, &v);
    if (!st && n) st = grow(u, &v->items, &v->cap, n, sizeof *v->items);
    if (st) return st;
    if (n) memcpy(v->items, items, n * sizeof *items);
    v->count = n;
    return push(u, v);
}

/* Input bytes, or NULL when fewer than n remain. */
static const unsigned char *take(unpickler *u, uint64_t n)
{
    if (n > (uint64_t)(u->end - u->p)) return NULL;
    const unsigned char *at = u->p;
    u->p += n;
    return at;
}

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Read an n-byte little-endian unsigned argument. */
static dm_status arg(unpickler *u, int n, uint64_t *v)
{
    const unsigned char *at = take(u, (uint64_t)n);
    if (!at) return bad(u, "truncated argument");
    *v = le(at, n);
    return DM_OK;
}

static dm_status push_int(unpickler *u, int64_t value)
{
    pk_value *v = NULL;
    dm_status st = new_value(u, PK_INT, &v);
    if (st) return st;
    v->integer = value;
    return push(u, v);
}

/* LONG1 / LONG4: little-endian two's complement of n bytes. */
static dm_status push_long(unpickler *u, uint64_t n)
{
    const unsigned char *at = take(u, n);
    if (!at) return bad(u, "integer of %llu bytes runs past the end of the pickle", (unsigned long long)n);
    if (n > 8) return push_new(u, PK_OBJECT); /* too big to be a size or offset */
    uint64_t bits = n ? le(at, (int)n) : 0;
    if (n && n < 8 && (at[n - 1] & 0x80)) bits |= ~(uint64_t)0 << (8 * n);
    return push_int(u, (int64_t)bits);
}

/* INT and LONG, the text integers of protocols 0 and 1 (torch.save with
 * pickle_protocol=1 writes False as INT 00): decimal digits up to a
 * newline, LONG's ending in an L; INT's 00 and 01 are False and True. */
static dm_status text_int(unpickler *u)
{
    const unsigned char *s = u->p, *e = memchr(u->p, '\n', (size_t)(u->end - u->p));
    if (!e) return bad(u, "integer without a newline");
    u->p = e + 1;
    if (u->op == 'L' && e > s && e[-1] == 'L') e--;
    if (u->op == 'I' && e - s == 2 && s[0] == '0' && (s[1] == '0' || s[1] == '1')) {
        pk_value *v = NULL;
        dm_status st = new_value(u, PK_BOOL, &v);
        if (st) return st;
        v->integer = s[1] == '1';
        return push(u, v);
    }
    int negative = s < e && *s == '-';
    if (s < e && (*s == '-' || *s == '+')) s++;
    if (s == e) return bad(u, "integer without digits");
    uint64_t value = 0;
    int big = 0;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9') return bad(u, "integer with a byte that is not a digit");
        if (value > (UINT64_MAX - 9) / 10) big = 1;
        else value = value * 10 + (uint64_t)(*s - '0');
    }
    if (big || value > (uint64_t)INT64_MAX + (uint64_t)negative) return push_new(u, PK_OBJECT); /* too big to be a size */
    return push_int(u, negative ? (int64_t)(0 - value) : (int64_t)value);
}

/* A string whose length is an n-byte argument. */
static dm_status push_string(unpickler *u, int n)
{
    uint64_t len = 0;
    dm_status st = arg(u, n, &len);
    if (st) return st;
    const unsigned char *at = take(u, len);
    if (!at) return bad(u, "string of %llu bytes runs past the end of the pickle", (unsigned long long)len);
    pk_value *v = NULL;
    st = new_value(u, PK_STRING, &v);
    if (st) return st;
    v->str = (const char *)at;
    v->len = (size_t)len;
    return push(u, v);
}

static int same(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(s, lit, len) == 0;
}

static dm_status push_global(unpickler *u, const char *module, size_t mlen, const char *name, size_t nlen)
{
    static const struct { const char *name; dm_dtype dtype; } storages[] = {
        {"FloatStorage", DM_F32}, {"HalfStorage", DM_F16}, {"BFloat16Storage", DM_BF16},
        {"DoubleStorage", DM_F64}, {"LongStorage", DM_I64}, {"IntStorage", DM_I32},
        {"ByteStorage", DM_U8}, {"CharStorage", DM_I8}, {"BoolStorage", DM_BOOL},
    };
    pk_value *v = NULL;
    dm_status st = new_value(u, PK_GLOBAL, &v);
    if (st) return st;
    v->global = PK_G_OTHER;
    if (same(module, mlen, "collections") && same(name, nlen, "OrderedDict")) v->global = PK_G_ORDERED_DICT;
    else if (same(module, mlen, "torch._utils") && same(name, nlen, "_rebuild_tensor_v2")) v->global = PK_G_REBUILD_TENSOR;
    else if (same(module, mlen, "torch") && same(name, nlen, "Size")) v->global = PK_G_SIZE;
    else if (same(module, mlen, "torch._utils") && same(name, nlen, "_rebuild_parameter")) v->global = PK_G_REBUILD_PARAMETER;
    else if (same(module, mlen, "torch"))
        for (size_t i = 0; i < sizeof storages / sizeof storages[0]; i++)
            if (same(name, nlen, storages[i].name)) {
                v->global = PK_G_STORAGE;
                v->dtype = storages[i].dtype;
            }
    return push(u, v);
}

/* GLOBAL: "module\nname\n" inline. */
static dm_status text_global(unpickler *u)
{
    const char *lines[2];
    size_t lens[2];
    for (int i = 0; i < 2; i++) {
        const unsigned char *nl = memchr(u->p, '\n', (size_t)(u->end - u->p));
        if (!nl) return bad(u, "GLOBAL name without a newline");
        lines[i] = (const char *)u->p;
        lens[i] = (size_t)(nl - u->p);
        u->p = nl + 1;
    }
    return push_global(u, lines[0], lens[0], lines[1], lens[1]);
}

static dm_status stack_global(unpickler *u)
{
    pk_value *name = NULL, *module = NULL;
    dm_status st;
    if ((st = pop(u, &name)) || (st = pop(u, &module))) return st;
    if (name->kind != PK_STRING || module->kind != PK_STRING) return bad(u, "STACK_GLOBAL needs two strings");
    return push_global(u, module->str, module->len, name->str, name->len);
}

/* REDUCE and NEWOBJ: only the known globals do anything. */
static dm_status call(unpickler *u, pk_value *callable, pk_value *args)
{
    if (args->kind != PK_TUPLE) return bad(u, "call arguments are not a tuple");
    pk_global g = callable->kind == PK_GLOBAL ? callable->global : PK_G_OTHER;
    if (g == PK_G_ORDERED_DICT) return push_new(u, PK_DICT);
    if (g == PK_G_SIZE && args->count == 1 && args->items[0]->kind == PK_TUPLE) return push(u, args->items[0]);
    /* nn.Parameter (a state dict saved with keep_vars=True): its data */
    if (g == PK_G_REBUILD_PARAMETER && args->count >= 1 && args->items[0]->kind == PK_TENSOR) return push(u, args->items[0]);
    if (g == PK_G_REBUILD_TENSOR) {
        pk_value *t = NULL;
        dm_status st = new_value(u, PK_TENSOR, &t);
        if (st) return st;
        t->args = args;
        return push(u, t);
    }
    return push_new(u, PK_OBJECT);
}

/* BINPERSID: ('storage', torch.XStorage, key, location, numel). */
static dm_status persistent_load(unpickler *u)
{
    pk_value *pid = NULL;
    dm_status st = pop(u, &pid);
    if (st) return st;
    pk_value **f = pid->items;
    if (pid->kind != PK_TUPLE || pid->count != 5 || f[0]->kind != PK_STRING ||
        !same(f[0]->str, f[0]->len, "storage") || f[1]->kind != PK_GLOBAL || f[2]->kind != PK_STRING ||
        f[4]->kind != PK_INT)
        return bad(u, "persistent id is not ('storage', type, key, location, numel)");
    if (f[1]->global != PK_G_STORAGE) return bad(u, "persistent id names an unsupported storage type");
    if (f[4]->integer < 0) return bad(u, "storage with a negative size");
    pk_value *s = NULL;
    st = new_value(u, PK_STORAGE, &s);
    if (st) return st;
    s->dtype = f[1]->dtype;
    s->str = f[2]->str;
    s->len = f[2]->len;
    s->integer = f[4]->integer;
    return push(u, s);
}

static dm_status memo_put(unpickler *u, uint64_t index)
{
    pk_value *v = NULL;
    dm_status st = top(u, &v);
    if (st) return st;
    /* Picklers number memo entries from 0 up: none can exceed the input. */
    if (index > (uint64_t)(u->end - u->buf)) return bad(u, "memo index %llu is absurd", (unsigned long long)index);
    size_t old = u->memo_cap;
    if ((st = grow(u, &u->memo, &u->memo_cap, (size_t)index + 1, sizeof *u->memo))) return st;
    if (u->memo_cap > old) memset(u->memo + old, 0, (u->memo_cap - old) * sizeof *u->memo);
    if (!u->memo[index]) u->memo_set++;
    u->memo[index] = v;
    return DM_OK;
}

/* v pushed again (DUP, a memo read).  A string is read in place, but
 * whoever takes the result copies each reference (a state dict's keys, a
 * checkpoint's class names): every reference after the first is charged
 * its length, or a few bytes of pickle could stand for gigabytes. */
static dm_status push_again(unpickler *u, pk_value *v)
{
    dm_status st = v->kind == PK_STRING ? charge(u, v->len) : DM_OK;
    return st ? st : push(u, v);
}

static dm_status memo_get(unpickler *u, uint64_t index)
{
    if (index >= u->memo_cap || !u->memo[index]) return bad(u, "memo entry %llu was never set", (unsigned long long)index);
    return push_again(u, u->memo[index]);
}

/* One opcode; *done is set by STOP. */
static dm_status step(unpickler *u, int *done)
{
    pk_value *a = NULL, *b = NULL, *c = NULL;
    size_t base = 0, n = 0;
    uint64_t x = 0;
    dm_status st = DM_OK;
    u->op_at = (size_t)(u->p - u->buf);
    u->op = *u->p++;
    switch (u->op) {
    case 0x80: /* PROTO */
        if ((st = arg(u, 1, &x))) return st;
        return x <= HIGHEST_PROTOCOL ? DM_OK : bad(u, "unknown pickle protocol %llu", (unsigned long long)x);
    case 0x95: /* FRAME: a buffering hint, the data follows inline */
        return arg(u, 8, &x);
    case '.': /* STOP */
        if ((st = pop(u, &u->out->root))) return st;
        *done = 1;
        return DM_OK;
    case '(': /* MARK */
        if ((st = grow(u, &u->marks, &u->marks_cap, u->mark_count + 1, sizeof *u->marks))) return st;
        u->marks[u->mark_count++] = u->depth;
        return DM_OK;
    case '0': /* POP: an item, or a mark with nothing above it */
        if (u->depth > fence(u)) return pop(u, &a);
        return pop_mark(u, &base, &n);
    case '1': return pop_mark(u, &base, &n); /* POP_MARK */
    case '2': return (st = top(u, &a)) ? st : push_again(u, a); /* DUP */
    case 'N': return push_new(u, PK_NONE);
    case 0x88: case 0x89: /* NEWTRUE, NEWFALSE */
        if ((st = new_value(u, PK_BOOL, &a))) return st;
        a->integer = u->op == 0x88;
        return push(u, a);
    case 'K': return (st = arg(u, 1, &x)) ? st : push_int(u, (int64_t)x); /* BININT1 */
    case 'M': return (st = arg(u, 2, &x)) ? st : push_int(u, (int64_t)x); /* BININT2 */
    case 'J': return (st = arg(u, 4, &x)) ? st : push_int(u, (int32_t)(uint32_t)x); /* BININT */
    case 'I': case 'L': return text_int(u); /* INT, LONG */
    case 0x8a: return (st = arg(u, 1, &x)) ? st : push_long(u, x); /* LONG1 */
    case 0x8b: /* LONG4 */
        if ((st = arg(u, 4, &x))) return st;
        if ((int32_t)(uint32_t)x < 0) return bad(u, "negative integer length");
        return push_long(u, x);
    case 'G': /* BINFLOAT: the value never matters here */
        if (!take(u, 8)) return bad(u, "truncated float");
        return push_new(u, PK_FLOAT);
    case 'U': case 'C': case 0x8c: return push_string(u, 1); /* SHORT_BINSTRING, SHORT_BINBYTES, SHORT_BINUNICODE */
    case 'T': case 'X': case 'B': return push_string(u, 4); /* BINSTRING, BINUNICODE, BINBYTES */
    case 0x8d: case 0x8e: case 0x96: return push_string(u, 8); /* BINUNICODE8, BINBYTES8, BYTEARRAY8 */
    case ')': return push_container(u, PK_TUPLE, NULL, 0); /* EMPTY_TUPLE */
    case ']': case 0x8f: return push_container(u, PK_LIST, NULL, 0); /* EMPTY_LIST, EMPTY_SET */
    case '}': return push_container(u, PK_DICT, NULL, 0); /* EMPTY_DICT */
    case 0x85: case 0x86: case 0x87: /* TUPLE1..3 */
        n = (size_t)(u->op - 0x84);
        if (u->depth - fence(u) < n) return bad(u, "stack underflow");
        u->depth -= n;
        return push_container(u, PK_TUPLE, u->stack + u->depth, n);
    case 't': case 'l': case 0x91: case 'd': /* TUPLE, LIST, FROZENSET, DICT */
        if ((st = pop_mark(u, &base, &n))) return st;
        if (u->op == 'd' && n % 2) return bad(u, "odd number of dict keys and values");
        return push_container(u, u->op == 't' ? PK_TUPLE : u->op == 'd' ? PK_DICT : PK_LIST, u->stack + base, n);
    case 'a': /* APPEND */
        if ((st = pop(u, &a)) || (st = top(u, &b))) return st;
        return add_items(u, b, &a, 1);
    case 's': /* SETITEM */
        if ((st = pop(u, &a)) || (st = pop(u, &b)) || (st = top(u, &c))) return st;
        return add_items(u, c, (pk_value *[]){b, a}, 2);
    case 'e': case 'u': case 0x90: /* APPENDS, SETITEMS, ADDITEMS */
        if ((st = pop_mark(u, &base, &n)) || (st = top(u, &a))) return st;
        return add_items(u, a, u->stack + base, n);
    case 'c': return text_global(u); /* GLOBAL */
    case 0x93: return stack_global(u); /* STACK_GLOBAL */
    case 'R': case 0x81: /* REDUCE, NEWOBJ */
        if ((st = pop(u, &b)) || (st = pop(u, &a))) return st;
        return call(u, a, b);
    case 0x92: /* NEWOBJ_EX: keyword arguments are ignored */
        if ((st = pop(u, &c)) || (st = pop(u, &b)) || (st = pop(u, &a))) return st;
        return call(u, a, b);
    case 'b': /* BUILD: object state (OrderedDict _metadata, ...) is not needed */
        if ((st = pop(u, &a)) || (st = top(u, &b))) return st;
        return DM_OK;
    case 'Q': return persistent_load(u); /* BINPERSID */
    case 'q': return (st = arg(u, 1, &x)) ? st : memo_put(u, x); /* BINPUT */
    case 'r': return (st = arg(u, 4, &x)) ? st : memo_put(u, x); /* LONG_BINPUT */
    case 0x94: return memo_put(u, u->memo_set); /* MEMOIZE */
    case 'h': return (st = arg(u, 1, &x)) ? st : memo_get(u, x); /* BINGET */
    case 'j': return (st = arg(u, 4, &x)) ? st : memo_get(u, x); /* LONG_BINGET */
    default:
        return bad(u, "unknown or unsupported opcode");
    }
}

dm_status dm_unpickle(const unsigned char *buf, size_t len, dm_pickle *out)
{
    memset(out, 0, sizeof *out);
    unpickler u = {.buf = buf, .p = buf, .end = buf + len, .out = out};
    u.budget = sizeof(pk_block) + (len < SIZE_MAX / DM_PICKLE_BYTES_PER_BYTE ? len * DM_PICKLE_BYTES_PER_BYTE : SIZE_MAX);
    /* The stack always exists, so stack + base is a valid pointer. */
    dm_status st = grow(&u, &u.stack, &u.stack_cap, 1, sizeof *u.stack);
    int done = 0;
    while (!done && st == DM_OK) {
        if (u.p == u.end) {
            u.op_at = len;
            u.op = 0;
            st = bad(&u, "the pickle ends without STOP");
            break;
        }
        st = step(&u, &done);
    }
    free(u.stack);
    free(u.marks);
    free(u.memo);
    if (st) dm_pickle_free(out);
    return st;
}

void dm_pickle_free(dm_pickle *pickle)
{
    pk_block *b = pickle->blocks;
    while (b) {
        pk_block *next = b->next;
        for (size_t i = 0; i < b->used; i++) free(b->values[i].items);
        free(b);
        b = next;
    }
    memset(pickle, 0, sizeof *pickle);
}

const pk_value *pk_dict_get(const pk_value *dict, const char *key)
{
    if (!dict || dict->kind != PK_DICT) return NULL;
    for (size_t i = dict->count; i >= 2; i -= 2) {
        const pk_value *k = dict->items[i - 2];
        if (k->kind == PK_STRING && same(k->str, k->len, key)) return dict->items[i - 1];
    }
    return NULL;
}
