/* pool.h — a few worker threads sharing the calling thread's loops.
 *
 * The caller posts a job of n chunks; every thread (the caller too) claims chunks in order until
 * none is left, and sl_pool_run returns when every chunk is done. A worker that wakes late finds
 * the chunks already claimed and the caller does not wait for it: work moves to whoever is
 * running. Between jobs the workers sleep on a futex (no spinning, so they do not compete with
 * OpenBLAS's threads or other processes), unless the job asks them to linger: then they watch
 * for the next job for that long before sleeping. The caller waits only for chunks in progress.
 *
 * One caller at a time: a pool is not shared between threads that post jobs. */
#ifndef SL_POOL_H
#define SL_POOL_H

#include "err.h"

#include <stdbool.h>

typedef struct sl_pool sl_pool;

/* Work on chunk `chunk` (0 .. n-1) of a job; ctx is the job's. Chunks run concurrently. */
typedef void (*sl_pool_fn)(void *ctx, int chunk);

/* A pool of n_threads (the caller counts as one: n_threads - 1 workers are started; 0: one per
 * CPU this thread may use). With pin, worker i runs on the i-th CPU after the caller's current
 * one, among the CPUs this thread may use (all online CPUs when the caller is pinned to fewer
 * than n_threads), so that a caller pinned to the first CPU, as sl_threads_setup does, keeps it. */
sl_pool *sl_pool_new(int n_threads, bool pin, sl_err *err);

/* Stops and joins the workers; accepts NULL and nulls the pointer. */
void sl_pool_destroy(sl_pool **self);

/* Threads counting the caller. */
int sl_pool_threads(const sl_pool *self);

/* Runs fn(ctx, 0 .. n_chunks-1) on the pool and returns when all are done (n_chunks < 2^24).
 * Afterwards the workers watch for the next job for linger_us microseconds before they sleep
 * (0: they sleep at once). A linger saves the futex wake-up (20-40 us on a VM) when jobs come
 * back to back, and burns the workers' CPUs for that long when they do not. */
void sl_pool_run(sl_pool *self, int n_chunks, sl_pool_fn fn, void *ctx, int linger_us);

/* Ends the last job's linger: workers still watching for a job sleep now (within microseconds). */
void sl_pool_rest(sl_pool *self);

#endif
