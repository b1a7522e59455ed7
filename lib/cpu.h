/* cpu.h — the compute threads: how many OpenBLAS uses, and pinning them one per core.
 *
 * On a small VM two unpinned threads are sometimes packed onto one core; pinning makes timings
 * repeatable. Pinning is offered, not imposed: nodes take it from their topology section. */
#ifndef SL_CPU_H
#define SL_CPU_H

#include "err.h"

#include <stdbool.h>

/* Sets OpenBLAS to n_threads (0: one per CPU the calling thread may use). With pin, the calling
 * thread goes to the first of those CPUs and OpenBLAS's worker threads to the next ones, one
 * each. Call it before starting other threads (those started earlier would be pinned as workers).
 * After a fork() OpenBLAS restarts its workers with the calling thread's affinity: to pin them
 * again, give the calling thread its former CPU set back (sched_setaffinity) and call this again. */
int sl_threads_setup(int n_threads, bool pin, sl_err *err);

/* CPUs this process may run on. */
int sl_cpu_count(void);

/* CPUs online (a thread pinned by sl_threads_setup may use only one of them). */
int sl_cpu_online(void);

#endif
