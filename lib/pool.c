/* pool.c — the worker threads of sl_pool: chunks claimed from one atomic word, futex sleep
 * between jobs.
 *
 * The job's state is one 64-bit word: active threads (8 bits) | chunks (28) | next chunk (28).
 * A thread joins a job by raising `active` while chunks are left, claims chunks by raising
 * `next`, and leaves by lowering `active`. The caller rewrites the job only when no thread is
 * active and none can join (next >= chunks), so a joined thread always reads the current job. */
#include "pool.h"

#include "cpu.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { MAX_THREADS = 64, CALLER_SPINS = 4000 };

#define NEXT_BITS 28
#define NEXT_MASK ((UINT64_C(1) << NEXT_BITS) - 1)
#define ACTIVE_ONE (UINT64_C(1) << (2 * NEXT_BITS))

struct sl_pool {
    int n_threads;
    pthread_t workers[MAX_THREADS];
    int n_started;
    sl_pool_fn fn; /* the current job: written by the caller while no thread is active */
    void *ctx;
    _Atomic int linger_us; /* the last job's: read by workers after they leave it */
    _Atomic uint64_t state;
    _Atomic uint32_t posted;   /* futex: jobs posted (the workers sleep on it) */
    _Atomic uint32_t finished; /* futex: jobs finished (the caller sleeps on it, rarely) */
    _Atomic int sleepers, caller_waiting;
    _Atomic bool stop;
};

static void futex_wait(_Atomic uint32_t *word, uint32_t expected)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word) { syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX); }

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    sched_yield();
#endif
}

static uint64_t job_state(int active, int chunks)
{
    return (uint64_t)active * ACTIVE_ONE | (uint64_t)chunks << NEXT_BITS;
}
static int state_next(uint64_t s) { return (int)(s & NEXT_MASK); }
static int state_chunks(uint64_t s) { return (int)((s >> NEXT_BITS) & NEXT_MASK); }
static int state_active(uint64_t s) { return (int)(s / ACTIVE_ONE); }

/* Joins the current job if chunks are left to claim. */
static bool join(sl_pool *p)
{
    uint64_t s = atomic_load(&p->state);
    while (state_next(s) < state_chunks(s))
        if (atomic_compare_exchange_weak(&p->state, &s, s + ACTIVE_ONE)) return true;
    return false;
}

/* Runs chunks of the joined job until none is left, then leaves it; the last to leave tells a
 * sleeping caller. */
static void work_and_leave(sl_pool *p)
{
    for (;;) {
        uint64_t s = atomic_fetch_add(&p->state, 1);
        if (state_next(s) >= state_chunks(s)) break;
        p->fn(p->ctx, state_next(s));
    }
    if (state_active(atomic_fetch_sub(&p->state, ACTIVE_ONE)) == 1) {
        atomic_fetch_add(&p->finished, 1);
        if (atomic_load(&p->caller_waiting)) futex_wake(&p->finished);
    }
}

/* Whether a job is posted after `seen` within linger_us microseconds (watching, not sleeping). */
static bool posted_soon(sl_pool *p, uint32_t seen, int linger_us)
{
    if (linger_us <= 0) return false;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (atomic_load(&p->posted) != seen) return true;
            cpu_relax();
        }
        if (atomic_load(&p->linger_us) == 0) return false; /* sl_pool_rest */
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 >= linger_us) return false;
    }
}

static void *worker_main(void *arg)
{
    sl_pool *p = arg;
    for (;;) {
        uint32_t seen = atomic_load(&p->posted);
        if (atomic_load(&p->stop)) break;
        if (join(p)) work_and_leave(p);
        if (posted_soon(p, seen, atomic_load(&p->linger_us))) continue;
        atomic_fetch_add(&p->sleepers, 1);
        futex_wait(&p->posted, seen); /* returns at once when a job was posted since `seen` */
        atomic_fetch_sub(&p->sleepers, 1);
    }
    return NULL;
}

/* The caller waits for threads still in a chunk: briefly spinning (a chunk takes microseconds),
 * then on the futex in case a worker was preempted. */
static void wait_idle(sl_pool *p)
{
    for (int spins = 0; spins < CALLER_SPINS; spins++) {
        if (state_active(atomic_load(&p->state)) == 0) return;
        cpu_relax();
    }
    atomic_store(&p->caller_waiting, 1);
    for (;;) {
        uint32_t f = atomic_load(&p->finished);
        if (state_active(atomic_load(&p->state)) == 0) break;
        futex_wait(&p->finished, f);
    }
    atomic_store(&p->caller_waiting, 0);
}

void sl_pool_run(sl_pool *self, int n_chunks, sl_pool_fn fn, void *ctx, int linger_us)
{
    atomic_store(&self->linger_us, linger_us);
    if (self->n_threads == 1 || n_chunks == 1) {
        for (int i = 0; i < n_chunks; i++)
            fn(ctx, i);
        return;
    }
    if (n_chunks <= 0) return;
    self->fn = fn;
    self->ctx = ctx;
    atomic_store(&self->state, job_state(1, n_chunks));
    atomic_fetch_add(&self->posted, 1);
    if (atomic_load(&self->sleepers) > 0) futex_wake(&self->posted);
    work_and_leave(self);
    wait_idle(self);
}

void sl_pool_rest(sl_pool *self) { atomic_store(&self->linger_us, 0); }

/* The CPUs of worker 1 .. n-1 into cpus: those after the caller's current CPU among the ones
 * this thread may use, or among all online CPUs when it may use fewer than n. */
static int worker_cpus(int *cpus, int n, sl_err *err)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) < n) {
        CPU_ZERO(&set);
        for (long c = 0, online = sysconf(_SC_NPROCESSORS_ONLN); c < online && c < CPU_SETSIZE; c++)
            CPU_SET(c, &set);
    }
    int list[CPU_SETSIZE], len = 0, start = 0, here = sched_getcpu();
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) {
            if (c == here) start = len;
            list[len++] = c;
        }
    if (len < n) return sl_fail(err, "cannot pin %d threads to %d CPUs", n, len);
    for (int i = 1; i < n; i++)
        cpus[i] = list[(start + i) % len];
    return 0;
}

static int start_worker(sl_pool *p, int cpu, sl_err *err)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    int rc = 0;
    if (cpu >= 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        rc = pthread_attr_setaffinity_np(&attr, sizeof one, &one);
    }
    if (rc == 0) rc = pthread_create(&p->workers[p->n_started], &attr, worker_main, p);
    pthread_attr_destroy(&attr);
    if (rc != 0) return sl_fail(err, "cannot start a kernel thread%s: %s", cpu >= 0 ? " (pinned)" : "", strerror(rc));
    p->n_started++;
    return 0;
}

sl_pool *sl_pool_new(int n_threads, bool pin, sl_err *err)
{
    if (n_threads == 0) n_threads = sl_cpu_count();
    if (n_threads < 1 || n_threads > MAX_THREADS) {
        sl_fail(err, "thread pool of %d threads: give 1 to %d", n_threads, MAX_THREADS);
        return NULL;
    }
    int cpus[MAX_THREADS];
    if (pin && worker_cpus(cpus, n_threads, err) != 0) return NULL;
    sl_pool *p = calloc(1, sizeof *p);
    if (!p) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    p->n_threads = n_threads;
    for (int i = 1; i < n_threads; i++)
        if (start_worker(p, pin ? cpus[i] : -1, err) != 0) {
            sl_pool_destroy(&p);
            return NULL;
        }
    return p;
}

void sl_pool_destroy(sl_pool **self)
{
    if (!self || !*self) return;
    sl_pool *p = *self;
    atomic_store(&p->stop, true);
    atomic_fetch_add(&p->posted, 1);
    futex_wake(&p->posted);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->workers[i], NULL);
    free(p);
    *self = NULL;
}

int sl_pool_threads(const sl_pool *self) { return self->n_threads; }
