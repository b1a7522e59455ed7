/* cpu.c — OpenBLAS thread count and per-thread CPU affinity (sched_setaffinity by thread id). */
#include "cpu.h"

#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int sl_cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
}

static int pin_thread(pid_t tid, int cpu, sl_err *err)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(tid, sizeof set, &set) != 0)
        return sl_fail(err, "cannot pin thread %d to CPU %d: %s", (int)tid, cpu, strerror(errno));
    return 0;
}

/* The allowed CPUs in order, into cpus (at most max); returns how many. */
static int allowed_cpus(int *cpus, int max)
{
    cpu_set_t set;
    int n = 0;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET(c, &set)) cpus[n++] = c;
    return n;
}

int sl_threads_setup(int n_threads, bool pin, sl_err *err)
{
    int cpus[CPU_SETSIZE];
    int n_cpus = allowed_cpus(cpus, CPU_SETSIZE);
    if (n_cpus < 1) return sl_fail(err, "cannot read this process's CPU affinity: %s", strerror(errno));
    if (n_threads <= 0) n_threads = n_cpus;
    if (pin && n_threads > n_cpus) return sl_fail(err, "cannot pin %d threads to %d CPUs", n_threads, n_cpus);
    openblas_set_num_threads(n_threads);
    if (!pin) return 0;
    /* A tiny sgemm makes OpenBLAS start its workers before we look for them. */
    float a[4] = {1, 2, 3, 4}, c[4];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 2, 1, a, 2, a, 2, 0, c, 2);
    pid_t self = (pid_t)syscall(SYS_gettid);
    if (pin_thread(self, cpus[0], err) != 0) return -1;
    DIR *dir = opendir("/proc/self/task");
    if (!dir) return sl_fail(err, "cannot list /proc/self/task: %s", strerror(errno));
    int next = 1, rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(dir)) != NULL) {
        pid_t tid = (pid_t)atoi(e->d_name);
        if (tid <= 0 || tid == self) continue;
        rc = pin_thread(tid, cpus[next++ % n_threads], err);
    }
    closedir(dir);
    return rc;
}
