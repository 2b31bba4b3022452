/* cgroup.c - the CPU quota and memory limit of this process's control
 * groups (cgroup.h).
 *
 * /proc/self/cgroup names the process's group in each hierarchy: v2's on
 * the line "0::PATH", a v1 controller's on a line whose controller list
 * holds its name ("cpu", "memory").  /proc/self/mountinfo says where each
 * hierarchy is mounted and which group is the mount's root: a container
 * sees its own group there, while /proc/self/cgroup may still give the
 * host's path to it.  The limit is the tightest one from the process's
 * group up to the mount's root, since a parent's limit bounds its
 * children. */
#include "cgroup.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_BYTES 4096

/* Reads the next line of f into buf without its newline; a line too long
 * for buf is skipped whole.  0 at the end of the file. */
static int next_line(FILE *f, char *buf, size_t size)
{
    while (fgets(buf, (int)size, f)) {
        char *newline = strchr(buf, '\n');
        if (newline) {
            *newline = '\0';
            return 1;
        }
        if (feof(f)) return 1; /* a last line without a newline */
        int c;
        while ((c = fgetc(f)) != EOF && c != '\n') {
        }
    }
    return 0;
}

/* Whether the comma-separated list holds word. */
static int has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, word, n) == 0) return 1;
        if (!end) return 0;
        p = end + 1;
    }
}

/* mountinfo writes a space, tab, newline or backslash in a path as \ and
 * three octal digits. */
static void unescape(char *s)
{
    char *out = s;
    for (const char *in = s; *in;) {
        if (in[0] == '\\' && in[1] >= '0' && in[1] <= '3' && in[2] >= '0' && in[2] <= '7' && in[3] >= '0' &&
            in[3] <= '7') {
            *out++ = (char)((in[1] - '0') << 6 | (in[2] - '0') << 3 | (in[3] - '0'));
            in += 4;
        } else {
            *out++ = *in++;
        }
    }
    *out = '\0';
}

static FILE *open_under(const char *root, const char *path)
{
    char file[PATH_BYTES];
    if (snprintf(file, sizeof file, "%s%s", root, path) >= (int)sizeof file) return NULL;
    return fopen(file, "r");
}

/* What is read of one controller: its v1 name, and the limit one group
 * sets (0 for none) in a unit where smaller is tighter. */
typedef struct controller {
    const char *v1_name;
    long long (*group_limit)(const char *dir, int version);
} controller;

/* The process's group in cgroup v2 (version 2) or in v1's hierarchy of
 * the controller (version 1); 0 if it has none. */
static int group_path(const char *root, int version, const controller *ctl, char *group, size_t size)
{
    FILE *f = open_under(root, "/proc/self/cgroup");
    if (!f) return 0;
    char line[PATH_BYTES];
    int found = 0;
    while (!found && next_line(f, line, sizeof line)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = *c2 = '\0';
        const char *controllers = c1 + 1, *path = c2 + 1;
        int match = version == 2 ? strcmp(line, "0") == 0 && !*controllers : has_word(controllers, ctl->v1_name);
        if (match && path[0] == '/' && strlen(path) < size) {
            strcpy(group, path);
            found = 1;
        }
    }
    fclose(f);
    return found;
}

/* Where the hierarchy is mounted, and the group that is the mount's root;
 * 0 if it is not mounted.  A mountinfo line: id, parent, device, root,
 * mount point, options, optional fields up to "-", file system type,
 * source, super options. */
static int find_mount(const char *root, int version, const controller *ctl, char *point, char *mount_root,
                      size_t size)
{
    FILE *f = open_under(root, "/proc/self/mountinfo");
    if (!f) return 0;
    char line[PATH_BYTES];
    int found = 0;
    while (!found && next_line(f, line, sizeof line)) {
        char *field[32], *save = NULL;
        int n = 0;
        for (char *t = strtok_r(line, " ", &save); t && n < 32; t = strtok_r(NULL, " ", &save)) field[n++] = t;
        int dash = 6;
        while (dash < n && strcmp(field[dash], "-") != 0) dash++;
        if (dash + 1 >= n) continue;
        const char *type = field[dash + 1], *super = dash + 3 < n ? field[dash + 3] : "";
        int match =
            version == 2 ? strcmp(type, "cgroup2") == 0 : strcmp(type, "cgroup") == 0 && has_word(super, ctl->v1_name);
        if (!match) continue;
        unescape(field[3]);
        unescape(field[4]);
        if (field[3][0] != '/' || field[4][0] != '/' || strlen(field[3]) >= size || strlen(field[4]) >= size) continue;
        strcpy(mount_root, field[3]);
        strcpy(point, field[4]);
        found = 1;
    }
    fclose(f);
    return found;
}

/* A whole decimal number and the end of it; 0 if s does not start with
 * one or it overflows. */
static int parse_number(const char *s, long long *value, const char **end)
{
    char *stop;
    errno = 0;
    *value = strtoll(s, &stop, 10);
    *end = stop;
    return stop != s && errno == 0;
}

/* The first line of dir/name into line; 0 if it cannot be read. */
static int first_line(const char *dir, const char *name, char *line, size_t size)
{
    char file[PATH_BYTES];
    if (snprintf(file, sizeof file, "%s/%s", dir, name) >= (int)sizeof file) return 0;
    FILE *f = fopen(file, "r");
    if (!f) return 0;
    int ok = next_line(f, line, size);
    fclose(f);
    return ok;
}

/* A number alone on the first line of dir/name. */
static int read_number(const char *dir, const char *name, long long *value)
{
    char line[64];
    const char *end;
    return first_line(dir, name, line, sizeof line) && parse_number(line, value, &end) && *end == '\0';
}

/* The processors' worth the group at dir grants; 0 if it sets no limit. */
static long long cpu_group_limit(const char *dir, int version)
{
    long long quota, period;
    if (version == 2) {
        /* cpu.max: "QUOTA PERIOD", or "max PERIOD" for no limit */
        char line[64];
        const char *end;
        if (!first_line(dir, "cpu.max", line, sizeof line) || !parse_number(line, &quota, &end) || *end != ' ' ||
            !parse_number(end + 1, &period, &end) || *end != '\0')
            return 0;
    } else if (!read_number(dir, "cpu.cfs_quota_us", &quota) || !read_number(dir, "cpu.cfs_period_us", &period)) {
        return 0;
    }
    if (quota <= 0 || period <= 0) return 0; /* v1 writes -1 for no limit */
    return quota / period + (quota % period != 0);
}

/* The bytes of memory the group at dir may use; 0 if it sets no limit.
 * v2's memory.max holds "max" for none, v1's memory.limit_in_bytes the
 * largest page count in bytes (about 2^63). */
static long long memory_group_limit(const char *dir, int version)
{
    long long bytes;
    if (!read_number(dir, version == 2 ? "memory.max" : "memory.limit_in_bytes", &bytes)) return 0;
    return bytes <= 0 || bytes >= (1LL << 62) ? 0 : bytes;
}

static const controller cpu_controller = {"cpu", cpu_group_limit};
static const controller memory_controller = {"memory", memory_group_limit};

/* The tightest limit of one hierarchy on the process's path; 0 if none. */
static long long hierarchy_limit(const char *root, int version, const controller *ctl)
{
    char group[PATH_BYTES], point[PATH_BYTES], mount_root[PATH_BYTES], dir[PATH_BYTES];
    if (!group_path(root, version, ctl, group, sizeof group) ||
        !find_mount(root, version, ctl, point, mount_root, sizeof point))
        return 0;
    /* The group below the mount's root; one outside it (a container's
     * view) is taken to be the root itself. */
    size_t n = strlen(mount_root);
    const char *below = group;
    if (strcmp(mount_root, "/") != 0)
        below = strncmp(group, mount_root, n) == 0 && (group[n] == '/' || group[n] == '\0') ? group + n : "";
    if (strcmp(below, "/") == 0) below = "";
    const char *base = strcmp(point, "/") == 0 ? "" : point;
    if (snprintf(dir, sizeof dir, "%s%s%s", root, base, below) >= (int)sizeof dir) return 0;
    size_t top = strlen(root) + strlen(base); /* dir's length at the mount point */
    long long best = 0;
    for (;;) {
        long long limit = ctl->group_limit(dir[0] ? dir : "/", version);
        if (limit > 0 && (best == 0 || limit < best)) best = limit;
        size_t len = strlen(dir);
        if (len <= top) break;
        char *slash = strrchr(dir, '/');
        size_t cut = slash ? (size_t)(slash - dir) : top;
        dir[cut < top ? top : cut] = '\0';
    }
    return best;
}

/* The tighter of v1's and v2's limits; 0 if neither sets one. */
static long long tightest(const char *root, const controller *ctl)
{
    long long v2 = hierarchy_limit(root, 2, ctl), v1 = hierarchy_limit(root, 1, ctl);
    if (!v2) return v1;
    return v1 && v1 < v2 ? v1 : v2;
}

int dm_cgroup_cpu_limit(const char *root)
{
    long long cpus = tightest(root, &cpu_controller);
    return cpus > INT_MAX ? INT_MAX : (int)cpus;
}

long long dm_cgroup_memory_limit(const char *root) { return tightest(root, &memory_controller); }
