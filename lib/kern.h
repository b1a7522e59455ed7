/* kern.h — linear layers computed directly on F32, F16, BF16 and Q8_0 weights (wmat.h), with
 * the instruction set picked at run time and a small pool of threads.
 *
 * One token (n = 1, every decode step) is a matrix–vector product: the threads split the output
 * columns, and each streams its rows of the matrix once (8 streams, software-prefetched), widening
 * 16-bit and 8-bit weights in registers, so a token costs the bytes of its weights' format. An F32
 * Conv1D matrix is split instead into 8 bands of its rows (each row is contiguous there), whose
 * partial sums are added in order. Several tokens (prefill, training forward) convert the weights
 * tile by tile into F32 (at most 1 MB, made by the pool's threads) and multiply with OpenBLAS's
 * sgemm; F32 matrices go to sgemm as they are.
 *
 * Instruction sets (each a complete set of kernels; `SL_KERNELS=name` forces one):
 *   portable    plain C (whatever the compiler makes of it for the baseline CPU)
 *   avx2        AVX2 + FMA + F16C: F16 by vcvtph2ps, BF16 by a 16-bit shift, Q8_0 by widening
 *               the int8 values to float
 *   avx512      AVX-512 F/BW/VL/DQ: the same on 16 lanes
 *   avx512vnni  avx512 plus AVX512-VNNI: a Q8_0 matrix–vector product quantises x to int8 in
 *               blocks of 32 (as ggml does) and multiplies with vpdpbusd; x's rounding adds up to
 *               sum over blocks of d_w * d_x/2 * sum |q_w| to each output (d_x = max |x_block| / 127)
 * BF16 is always widened exactly by a shift: AVX512-BF16's dot product would round x to BF16 as
 * well, for no gain on a product bound by memory.
 *
 * Results: every path computes in F32 with F32 accumulators, in an order fixed by the path and the
 * matrix: the same bits on every run and for any thread count. Different paths differ by rounding
 * only (see tests/test_kernels.c for the bounds). */
#ifndef SL_KERN_H
#define SL_KERN_H

#include "wmat.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sl_kern_isa {
    SL_KERN_AUTO = -1, /* SL_KERNELS when set, else the best this CPU supports */
    SL_KERN_PORTABLE,
    SL_KERN_AVX2,
    SL_KERN_AVX512,
    SL_KERN_AVX512VNNI,
    SL_KERN_ISA_COUNT
} sl_kern_isa;

/* "portable", "avx2", "avx512", "avx512vnni". */
const char *sl_kern_isa_name(sl_kern_isa isa);

/* Parses one of sl_kern_isa_name's names; the error lists them. */
int sl_kern_isa_parse(const char *name, sl_kern_isa *out, sl_err *err);

/* Whether this CPU (and OS) can run isa's kernels. */
bool sl_kern_isa_supported(sl_kern_isa isa);

/* The kernels and their threads. Owns its threads and scratch memory. */
typedef struct sl_kern sl_kern;

/* n_threads and pin as sl_pool_new (0: one per CPU; with pin the workers take the CPUs after the
 * caller's). isa SL_KERN_AUTO reads SL_KERNELS; an unknown or unsupported name, or an isa this
 * CPU cannot run, is an error. NULL on failure. */
sl_kern *sl_kern_new(int n_threads, bool pin, sl_kern_isa isa, sl_err *err);

/* Stops the threads and frees everything; accepts NULL and nulls the pointer. */
void sl_kern_destroy(sl_kern **self);

/* The instruction set in use. */
sl_kern_isa sl_kern_isa_used(const sl_kern *self);

/* After each matrix–vector product the workers watch for the next one for linger_us microseconds
 * before they sleep (default 0: they sleep at once, and never spin). Waking a sleeping thread costs
 * 20-40 us on a VM, paid by every product when they come back to back (a decode step: 49 for
 * GPT-2 124M, microseconds apart); lingering saves it, at the price of the workers spinning
 * through the gaps. Prefill tiles never linger (OpenBLAS's threads take the CPUs next). */
void sl_kern_set_linger(sl_kern *self, int linger_us);

/* Workers still watching for a product sleep now (the linger setting stays for the next ones):
 * the runner calls it at the end of every forward call, so that nothing spins between calls. */
void sl_kern_rest(sl_kern *self);

/* out (n,OC) = inp (n,C) @ w + bias (OC), or out += that with accumulate; bias may be NULL.
 * inp and out must not overlap. F32 Conv1D matrices with n > 1 take exactly the path of
 * sl_matmul_forward (ops.h). Fails on a malformed w (sl_wmat_check), n < 1, or no memory for
 * the scratch (a few MB, allocated at the first call that needs it). One caller at a time. */
int sl_kern_matmul(sl_kern *self, float *out, const float *inp, int n, const sl_wmat *w, const float *bias,
                   bool accumulate, sl_err *err);

/* dst ((o1-o0) x in floats) = outputs [o0, o1) of w (ROWS layout) dequantised, on the calling
 * thread with the set's kernels (an F16 KV cache's rows, widened before attention). */
void sl_kern_widen(sl_kern *self, float *dst, const sl_wmat *w, int o0, int o1);

/* Reads every byte of the n buffers once on the pool's threads (each thread its share of every
 * buffer as 8 software-prefetched streams, with the set's vector loads) and returns a value
 * computed from them (so that the reads happen). Its time is the floor under matrix–vector
 * products on those bytes: the memory's bandwidth with enough loads in flight. */
uint64_t sl_kern_stream(sl_kern *self, const void *const *bufs, const size_t *lens, int n);

#endif
