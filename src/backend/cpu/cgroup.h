/* cgroup.h - the CPU time and memory Linux control groups grant this
 * process. */
#ifndef DM_CGROUP_H
#define DM_CGROUP_H

/* Processors' worth of CPU time the control groups of this process allow:
 * ceil(quota / period) of the tightest limit on its path, cgroup v2's
 * cpu.max or v1's cpu.cfs_quota_us over cpu.cfs_period_us (what a
 * container's --cpus sets).  0 when none limits it, or when the files
 * cannot be read or make no sense.  Every path read is prefixed by root:
 * "" for this system, a directory laid out like one for tests. */
int dm_cgroup_cpu_limit(const char *root);

/* Bytes of memory the control groups of this process allow: the tightest
 * limit on its path, cgroup v2's memory.max or v1's memory.limit_in_bytes
 * (what a container's --memory sets).  0 when none limits it, or when the
 * files cannot be read or make no sense.  root as above. */
long long dm_cgroup_memory_limit(const char *root);

#endif
