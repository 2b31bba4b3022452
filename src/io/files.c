/* files.c - opening inputs without blocking, and writing outputs whole
 * through temporary files (declared in internal_api.h). */
#include "internal_api.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static ssize_t memout_write(void *cookie, const char *buf, size_t size)
{
    dm_memout *m = cookie;
    if (!m->failed && size >= m->cap - m->len) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap - m->len <= size && cap < SIZE_MAX / 2) cap *= 2;
        char *grown = cap - m->len > size ? realloc(m->text, cap) : NULL;
        if (grown) m->text = grown, m->cap = cap;
        else m->failed = 1;
    }
    if (m->failed) return 0; /* the stream's error, and m->failed for close */
    memcpy(m->text + m->len, buf, size);
    m->len += size;
    return (ssize_t)size;
}

int dm_memout_open(dm_memout *m)
{
    *m = (dm_memout){0};
    m->f = fopencookie(m, "w", (cookie_io_functions_t){.write = memout_write});
    return m->f ? 0 : -1;
}

int dm_memout_close(dm_memout *m)
{
    int closed = fclose(m->f) == 0;
    m->f = NULL;
    if (closed && !m->failed && (m->text || (m->text = malloc(1)))) {
        m->text[m->len] = '\0'; /* the write kept a byte free */
        return 0;
    }
    free(m->text);
    m->text = NULL;
    m->len = 0;
    return -1;
}

int dm_open_input(const char *path, size_t *size)
{
    /* Without O_NONBLOCK, opening a FIFO waits for a writer forever. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        dm_fail(DM_ERR_IO, "cannot open: %s", strerror(errno));
        return -1;
    }
    struct stat sb;
    dm_status st = DM_OK;
    if (fstat(fd, &sb) != 0) st = dm_fail(DM_ERR_IO, "cannot stat: %s", strerror(errno));
    else if (S_ISDIR(sb.st_mode)) st = dm_fail(DM_ERR_IO, "is a directory, not a file");
    else if (!S_ISREG(sb.st_mode)) st = dm_fail(DM_ERR_IO, "not a regular file");
    else if (fcntl(fd, F_SETFL, 0) != 0) st = dm_fail(DM_ERR_IO, "cannot read: %s", strerror(errno));
    if (st != DM_OK) {
        close(fd);
        return -1;
    }
    *size = (size_t)sb.st_size;
    return fd;
}

dm_status dm_read_input(const char *path, size_t max_size, const char *what, char **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    size_t file_size;
    int fd = dm_open_input(path, &file_size);
    if (fd < 0) return DM_ERR_IO;
    dm_status st = DM_OK;
    if (file_size > max_size)
        st = dm_fail(DM_ERR_FORMAT, "file of %zu bytes is too large for the %s", file_size, what);
    else if (!(*data = malloc(file_size + 1)))
        st = dm_fail(DM_ERR_NOMEM, "out of memory reading the file");
    size_t got = 0;
    while (!st && got < file_size) {
        ssize_t r = read(fd, *data + got, file_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            st = r < 0 ? dm_fail(DM_ERR_IO, "read failed: %s", strerror(errno))
                       : dm_fail(DM_ERR_IO, "file shrank while being read");
        else
            got += (size_t)r;
    }
    close(fd);
    if (st != DM_OK) {
        free(*data);
        *data = NULL;
        return st;
    }
    (*data)[got] = 0;
    *size = got;
    return DM_OK;
}

int dm_stat_input(const char *path, struct stat *st) { return strcmp(path, "-") ? stat(path, st) : fstat(0, st); }

dm_status dm_output_distinct(const char *path, const char *const *inputs, size_t count)
{
    struct stat out;
    if (stat(path, &out) != 0) return DM_OK; /* a new file is no input */
    for (size_t i = 0; i < count; i++) {
        struct stat in;
        int known = inputs[i] && dm_stat_input(inputs[i], &in) == 0;
        if (known && in.st_dev == out.st_dev && in.st_ino == out.st_ino)
            return dm_fail(DM_ERR_ARGUMENT, "%s: the output is the input file %s; choose another name", path,
                           inputs[i]);
    }
    return DM_OK;
}

/* Replace the last six characters of name by random letters and digits. */
static int randomize(char *name)
{
    static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    unsigned char r[6];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return 0;
    char *at = name + strlen(name) - sizeof r;
    for (size_t i = 0; i < sizeof r; i++) at[i] = chars[r[i] % (sizeof chars - 1)];
    return 1;
}

/* The temporary files being written, for dm_outfile_remove_temporaries:
 * a slot is claimed (2) while its name is copied in, then in use (1). */
#define PENDING_SLOTS 16
static struct {
    atomic_int state;
    char name[PATH_MAX];
} pending[PENDING_SLOTS];

/* A slot holding name, or -1 where none is free (the file is then not
 * removed by a signal, only by dm_outfile_finish). */
static int hold_pending(const char *name)
{
    if (strlen(name) >= PATH_MAX) return -1;
    for (int i = 0; i < PENDING_SLOTS; i++) {
        int free_slot = 0;
        if (!atomic_compare_exchange_strong(&pending[i].state, &free_slot, 2)) continue;
        strcpy(pending[i].name, name);
        atomic_store(&pending[i].state, 1);
        return i;
    }
    return -1;
}

void dm_outfile_remove_temporaries(void)
{
    for (int i = 0; i < PENDING_SLOTS; i++)
        if (atomic_load(&pending[i].state) == 1) unlink(pending[i].name);
}

/* The descriptor under an output's stream and the errno of its first
 * failed write: stdio keeps only an error flag, and errno may have been
 * overwritten by the time the output is closed. */
struct dm_outfile_sink {
    int fd;
    int error;
};

static ssize_t sink_write(void *cookie, const char *buf, size_t size)
{
    struct dm_outfile_sink *s = cookie;
    for (size_t done = 0; done < size;) {
        ssize_t n = write(s->fd, buf + done, size - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (!s->error) s->error = n < 0 ? errno : EIO;
            return -1;
        }
        done += (size_t)n;
    }
    return (ssize_t)size;
}

static int sink_close(void *cookie)
{
    struct dm_outfile_sink *s = cookie;
    int closed = close(s->fd);
    if (closed != 0 && !s->error) s->error = errno;
    s->fd = -1;
    return closed;
}

/* out->f writing to fd (taken: closed on failure too). */
static dm_status stream_on(int fd, dm_outfile *out)
{
    static const cookie_io_functions_t sink_io = {.write = sink_write, .close = sink_close};
    if ((out->sink = malloc(sizeof *out->sink))) {
        *out->sink = (struct dm_outfile_sink){.fd = fd};
        if ((out->f = fopencookie(out->sink, "wb", sink_io))) return DM_OK;
    }
    close(fd);
    free(out->sink);
    out->sink = NULL;
    return dm_fail(DM_ERR_NOMEM, "out of memory writing %s", out->path);
}

/* The descriptor that /dev/stdout, /dev/stderr, /dev/fd/N or
 * /proc/self/fd/N names, or -1 for any other path. */
static int own_descriptor(const char *path)
{
    if (!strcmp(path, "/dev/stdout")) return 1;
    if (!strcmp(path, "/dev/stderr")) return 2;
    const char *digits = !strncmp(path, "/dev/fd/", 8) ? path + 8 : !strncmp(path, "/proc/self/fd/", 14) ? path + 14 : NULL;
    if (!digits || !*digits || strspn(digits, "0123456789") != strlen(digits) || strlen(digits) > 9) return -1;
    return atoi(digits);
}

/* An output that exists and is neither a regular file nor a directory (a
 * device such as /dev/null, a named pipe) is written in place: renaming
 * over it would replace the device node or the pipe.  A pipe that no
 * process reads is refused at once instead of waited for. */
static dm_status open_in_place(const char *path, dm_outfile *out)
{
    int fd = open(path, O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ENXIO ? dm_fail(DM_ERR_IO, "%s: a named pipe that no process reads", path)
                              : dm_fail(DM_ERR_IO, "%s: cannot open it: %s", path, strerror(errno));
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        dm_status st = dm_fail(DM_ERR_IO, "%s: cannot write to it: %s", path, strerror(errno));
        close(fd);
        return st;
    }
    return stream_on(fd, out);
}

/* out->tmp created beside out->target, out->f writing to it. */
static dm_status open_temporary(dm_outfile *out)
{
    /* TARGET.tmp.XXXXXX, its file name cut short where the suffix would
     * take it past NAME_MAX (the random part keeps it unique) */
    const char *target = out->target, *base = strrchr(target, '/');
    size_t dir_len = base ? (size_t)(base + 1 - target) : 0, base_len = strlen(target) - dir_len, suffix = 11;
    if (base_len > NAME_MAX - suffix) base_len = NAME_MAX - suffix;
    if (asprintf(&out->tmp, "%.*s.tmp.XXXXXX", (int)(dir_len + base_len), target) < 0) {
        out->tmp = NULL;
        return dm_fail(DM_ERR_NOMEM, "out of memory writing %s", out->path);
    }
    int fd = -1, attempts = 0;
    do {
        if (!randomize(out->tmp)) break;
        fd = open(out->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    } while (fd < 0 && errno == EEXIST && ++attempts < 100);
    if (fd < 0) {
        dm_status st = dm_fail(DM_ERR_IO, "%s: cannot create a temporary file beside it: %s", out->path,
                               strerror(errno));
        free(out->tmp);
        out->tmp = NULL;
        return st;
    }
    dm_status st = stream_on(fd, out);
    if (st != DM_OK) {
        unlink(out->tmp);
        free(out->tmp);
        out->tmp = NULL;
        return st;
    }
    out->pending = hold_pending(out->tmp);
    return DM_OK;
}

static dm_status open_output(const char *path, dm_outfile *out)
{
    int own = own_descriptor(path);
    if (own >= 0) {
        int fd = fcntl(own, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) return dm_fail(DM_ERR_IO, "%s: cannot write to it: %s", path, strerror(errno));
        return stream_on(fd, out);
    }
    struct stat sb;
    int exists = stat(path, &sb) == 0;
    if (exists && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)) return open_in_place(path, out);
    if (lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode)) {
        if (!exists) return dm_fail(DM_ERR_IO, "%s: a symbolic link to nothing: %s", path, strerror(errno));
        if (!(out->target = realpath(path, NULL)))
            return dm_fail(DM_ERR_IO, "%s: cannot follow the link: %s", path, strerror(errno));
    } else if (!(out->target = strdup(path))) {
        return dm_fail(DM_ERR_NOMEM, "out of memory writing %s", path);
    }
    return open_temporary(out);
}

dm_status dm_outfile_open(const char *path, dm_outfile *out)
{
    *out = (dm_outfile){.pending = -1};
    if (!(out->path = strdup(path))) return dm_fail(DM_ERR_NOMEM, "out of memory writing %s", path);
    dm_status st = open_output(path, out);
    if (st != DM_OK) dm_outfile_finish(out, 0);
    return st;
}

dm_status dm_outfile_finish(dm_outfile *out, int ok)
{
    dm_status st = DM_OK;
    if (out->f) {
        int failed = ferror(out->f);
        failed |= fclose(out->f) != 0;
        int error = out->sink->error;
        if (ok && failed)
            st = dm_fail(DM_ERR_IO, "%s: write failed: %s", out->path, strerror(error ? error : EIO));
        else if (ok && out->tmp && rename(out->tmp, out->target) != 0)
            st = dm_fail(DM_ERR_IO, "%s: cannot replace it: %s", out->path, strerror(errno));
        if (out->tmp && (!ok || st != DM_OK)) unlink(out->tmp);
    }
    if (out->tmp && out->pending >= 0) atomic_store(&pending[out->pending].state, 0);
    free(out->sink);
    free(out->tmp);
    free(out->target);
    free(out->path);
    *out = (dm_outfile){.pending = -1};
    return st;
}
