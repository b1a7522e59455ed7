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

/* The thread ids of this process, into tids (at most max); returns how many, -1 on error. */
static int list_threads(pid_t *tids, int max)
{
    DIR *dir = opendir("/proc/self/task");
    if (!dir) return -1;
    int n = 0;
    struct dirent *e;
    while (n < max && (e = readdir(dir)) != NULL) {
        pid_t tid = (pid_t)atoi(e->d_name);
        if (tid > 0) tids[n++] = tid;
    }
    closedir(dir);
    return n;
}

/* The CPUs the calling thread may use (the process's, unless it was pinned). */
static void allowed_cpus(cpu_set_t *set)
{
    if (sched_getaffinity(0, sizeof *set, set) != 0) CPU_ZERO(set);
}

int sl_cpu_count(void)
{
    cpu_set_t set;
    allowed_cpus(&set);
    return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
}

int sl_cpu_online(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
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

/* Makes OpenBLAS start its workers before we look for them: they start at load time, but a
 * fork() stops them (OpenBLAS's atfork handler) and they come back only with the next threaded
 * call, with the calling thread's affinity. An sgemm of 128^3 is above OpenBLAS's threading
 * threshold (about 64^3). */
static int start_workers(sl_err *err)
{
    enum { n = 128 };
    float *a = calloc(2 * n * n, sizeof *a);
    if (!a) return sl_fail(err, "out of memory");
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, a, n, 0, a + n * n, n);
    free(a);
    return 0;
}

int sl_threads_setup(int n_threads, bool pin, sl_err *err)
{
    cpu_set_t allowed;
    allowed_cpus(&allowed);
    int cpus[CPU_SETSIZE], n_cpus = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &allowed)) cpus[n_cpus++] = c;
    if (n_cpus < 1) return sl_fail(err, "cannot read this process's CPU affinity: %s", strerror(errno));
    if (n_threads <= 0) n_threads = n_cpus;
    if (pin && n_threads > n_cpus) return sl_fail(err, "cannot pin %d threads to %d CPUs", n_threads, n_cpus);
    openblas_set_num_threads(n_threads);
    if (!pin) return 0;
    if (start_workers(err) != 0) return -1;
    pid_t self = (pid_t)syscall(SYS_gettid), tids[1024];
    int n = list_threads(tids, 1024);
    if (n < 0) return sl_fail(err, "cannot list /proc/self/task: %s", strerror(errno));
    int rc = pin_thread(self, cpus[0], err);
    for (int i = 0, next = 1; rc == 0 && i < n; i++)
        if (tids[i] != self) rc = pin_thread(tids[i], cpus[next++ % n_threads], err);
    return rc;
}
