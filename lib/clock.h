/* clock.h — time for timeouts, logs and benchmarks: monotonic seconds and the median of samples. */
#ifndef SL_CLOCK_H
#define SL_CLOCK_H

/* Seconds on the monotonic clock (an arbitrary origin: use differences). */
double sl_now(void);

/* Microseconds on this host's wall clock (comparable between processes of one host only). */
long long sl_wall_us(void);

/* The median of n samples (sorts them in place); 0 when n is 0. */
double sl_median(double *samples, int n);

#endif
