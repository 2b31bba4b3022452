/* test_cgroup.c - the CPU quota and memory limit read from control groups
 * (cgroup.c), on
 * directories laid out like a system's /proc/self and /sys/fs/cgroup: as
 * a host, a container, a nested group, cgroup v1 and v2 each, and files
 * that are missing, malformed or out of range. */
#define _XOPEN_SOURCE 700
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"

static char root[64];

static void make_root(void)
{
    strcpy(root, "/tmp/dm_cgroup_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

static void remove_root(void) { nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* root/rel holding text, its directories made as needed. */
static void put(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s%s", root, rel);
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

#define V2_MOUNT "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"

START_TEST(v2_container)
{
    /* Docker's default: the group namespace makes the container's group "/" */
    put("/proc/self/cgroup", "0::/\n");
    put("/proc/self/mountinfo", "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n" V2_MOUNT);
    put("/sys/fs/cgroup/cpu.max", "150000 100000\n");
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 2);
    put("/sys/fs/cgroup/cpu.max", "200000 100000\n");
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 2);
    put("/sys/fs/cgroup/cpu.max", "max 100000\n");
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 0);
    put("/sys/fs/cgroup/cpu.max", "1000 100000\n"); /* a hundredth of a processor is still one thread */
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 1);
}
END_TEST

/* A parent's quota bounds its children: the tightest on the path counts,
 * from the process's group up to the mount, not beyond it. */
START_TEST(v2_nested_groups)
{
    put("/proc/self/cgroup", "0::/system.slice/job.service\n");
    put("/proc/self/mountinfo", V2_MOUNT);
    put("/sys/fs/cgroup/system.slice/job.service/cpu.max", "max 100000\n");
    put("/sys/fs/cgroup/system.slice/cpu.max", "300000 100000\n");
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 3);
    put("/sys/fs/cgroup/system.slice/job.service/cpu.max", "50000 50000\n");
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 1);
    put("/sys/fs/cgroup/system.slice/job.service/cpu.max", "max 100000\n");
    put("/sys/fs/cgroup/cpu.max", "100000 100000\n"); /* the walk reads the mount point's group too */
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 1);
}
END_TEST

/* cgroup v1 in a container without a group namespace: /proc/self/cgroup
 * gives the host's path, which is the mount's root; cpu and cpuacct share
 * a hierarchy.  A v2 hierarchy without the cpu controller sits beside it
 * (a hybrid system). */
START_TEST(v1_container)
{
    put("/proc/self/cgroup", "12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/docker/abc\n");
    put("/proc/self/mountinfo",
        "40 30 0:35 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
        "41 30 0:36 /docker/abc /sys/fs/cgroup/unified ro - cgroup2 cgroup2 rw\n");
    put("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    put("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "250000\n");
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 3);
    put("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 0);
}
END_TEST

/* v1 on a host: the group below the mount, its parent limited; the
 * controller named exactly (cpuset is not cpu), the mount point escaped
 * as mountinfo writes a space. */
START_TEST(v1_host_nested)
{
    put("/proc/self/cgroup", "3:cpuset:/batch\n1:cpu:/batch/one\n");
    put("/proc/self/mountinfo",
        "32 31 0:29 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n"
        "33 31 0:30 / /sys/fs/cgroup/my\\040cpu rw - cgroup cgroup rw,cpu\n");
    put("/sys/fs/cgroup/my cpu/batch/one/cpu.cfs_quota_us", "-1\n");
    put("/sys/fs/cgroup/my cpu/batch/one/cpu.cfs_period_us", "100000\n");
    put("/sys/fs/cgroup/my cpu/batch/cpu.cfs_quota_us", "400000\n");
    put("/sys/fs/cgroup/my cpu/batch/cpu.cfs_period_us", "100000\n");
    put("/sys/fs/cgroup/cpuset/batch/cpu.cfs_quota_us", "100000\n"); /* not the cpu hierarchy's */
    put("/sys/fs/cgroup/cpuset/batch/cpu.cfs_period_us", "100000\n");
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 4);
}
END_TEST

/* Both hierarchies limit: the tighter wins. */
START_TEST(both_versions)
{
    put("/proc/self/cgroup", "1:cpu:/\n0::/\n");
    put("/proc/self/mountinfo", "33 31 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n" V2_MOUNT);
    put("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "500000\n");
    put("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
    put("/sys/fs/cgroup/cpu.max", "700000 100000\n");
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 5);
    put("/sys/fs/cgroup/cpu.max", "200000 100000\n");
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 2);
}
END_TEST

/* No files, or files that make no sense, mean no limit, never a crash. */
START_TEST(nothing_to_read_means_no_limit)
{
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 0);
    put("/proc/self/cgroup", "0::/\n");
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 0); /* no mountinfo */
    put("/proc/self/mountinfo", V2_MOUNT);
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 0); /* no cpu.max */
    static const char *const bad[] = {
        "",
        "100000\n",
        "0 100000\n",
        "-5 100000\n",
        "100000 0\n",
        "100000 -1\n",
        "100000 100000 7\n",
        "1e5 100000\n",
        "99999999999999999999999 100000\n",
        "100000 99999999999999999999999\n",
        "max\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        put("/sys/fs/cgroup/cpu.max", bad[i]);
        ck_assert_msg(dm_cgroup_cpu_limit(root) == 0, "cpu.max \"%s\" gave %d", bad[i], dm_cgroup_cpu_limit(root));
    }
    /* the largest quota is held to an int */
    put("/sys/fs/cgroup/cpu.max", "9223372036854775807 1\n");
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 2147483647);
    /* malformed lines around a good one; a line longer than any buffer */
    char *long_line = malloc(20000);
    ck_assert_ptr_nonnull(long_line);
    memset(long_line, 'x', 19998);
    strcpy(long_line + 19998, "\n");
    put("/sys/fs/cgroup/cpu.max", "300000 100000\n");
    char text[20200];
    snprintf(text, sizeof text, "%s:::\nno colon\n0::relative\n0::/\n", long_line);
    put("/proc/self/cgroup", text);
    snprintf(text, sizeof text, "%sshort line\n1 2 3 4 5 6 -\n1 2 3 / /sys/fs/cgroup rw - cgroup2\n", long_line);
    put("/proc/self/mountinfo", text);
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 3);
    free(long_line);
}
END_TEST

/* Memory: v2's memory.max in bytes or "max"; v1's memory.limit_in_bytes,
 * where no limit reads as the largest page count; the tightest on the
 * path, from the controller's own hierarchy only. */
START_TEST(memory_limits)
{
    put("/proc/self/cgroup", "0::/job\n");
    put("/proc/self/mountinfo", V2_MOUNT);
    ck_assert_int_eq(dm_cgroup_memory_limit(root), 0); /* no memory.max */
    put("/sys/fs/cgroup/job/memory.max", "max\n");
    ck_assert_int_eq(dm_cgroup_memory_limit(root), 0);
    put("/sys/fs/cgroup/job/memory.max", "2147483648\n");
    ck_assert_int_eq(dm_cgroup_memory_limit(root), 2147483648LL);
    put("/sys/fs/cgroup/memory.max", "1073741824\n"); /* the parent's is tighter */
    ck_assert_int_eq(dm_cgroup_memory_limit(root), 1073741824LL);
    ck_assert_int_eq(dm_cgroup_cpu_limit(root), 0); /* memory says nothing of the CPU */
    static const char *const bad[] = {"", "0\n", "-4096\n", "1e9\n", "4G\n", "1073741824 7\n",
                                      "99999999999999999999999\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        put("/sys/fs/cgroup/memory.max", bad[i]);
        ck_assert_msg(dm_cgroup_memory_limit(root) == 2147483648LL, "memory.max \"%s\" gave %lld", bad[i],
                      dm_cgroup_memory_limit(root));
    }

    /* v1 in a container: the group's path outside the mount's root */
    put("/proc/self/cgroup", "4:cpu,cpuacct:/docker/abc\n9:memory:/docker/abc\n");
    put("/proc/self/mountinfo",
        "40 30 0:35 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n"
        "41 30 0:36 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n");
    put("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
    put("/sys/fs/cgroup/cpu,cpuacct/memory.limit_in_bytes", "4096\n"); /* not the memory hierarchy's */
    ck_assert_int_eq(dm_cgroup_memory_limit(root), 0);
    put("/sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n");
    ck_assert_int_eq(dm_cgroup_memory_limit(root), 536870912LL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cgroup");
    TCase *tc = tcase_create("cgroup");
    tcase_add_checked_fixture(tc, make_root, remove_root);
    tcase_add_test(tc, v2_container);
    tcase_add_test(tc, v2_nested_groups);
    tcase_add_test(tc, v1_container);
    tcase_add_test(tc, v1_host_nested);
    tcase_add_test(tc, both_versions);
    tcase_add_test(tc, nothing_to_read_means_no_limit);
    tcase_add_test(tc, memory_limits);
    suite_add_tcase(s, tc);
    return test_run(s);
}
