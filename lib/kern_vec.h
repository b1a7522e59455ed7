/* kern_vec.h — the matrix–vector, tile and streaming kernels written once over a vector of LANES
 * floats; kern_x86.c includes this file once per instruction set, after defining:
 *
 *   TARGET                 the functions' target attribute
 *   NAME(x)                x with the set's suffix (the table is NAME(sl_kern_fns))
 *   vec, LANES             the float vector and its lanes; vbits, BITS_BYTES: the integer vector
 *   vzero() vset1(f) vloadx(p) vstore(p, v) vfma(a, b, acc) vmul(a, b) vadd(a, b) vhsum(v)
 *   vload_w(row, c, fmt)   LANES weights from element c of a 32- or 16-bit row, widened to F32
 *   vload_q8(q)            LANES int8 values widened to F32
 *   bits_zero() bits_load(p) bits_xor(a, b) bits_low(v)
 *
 * and the set-independent GROUP, PF_AHEAD, LINE, INLINE, elem_size, elem_f32, scales8 and
 * stream_tail. Not a header of its own: no include guard, and it undefines its parameters. */

/* Outputs o + k*stride (k < R) of a 16/32-bit ROWS matrix: one accumulator per row, fed in the
 * order of c whatever R is; GROUP rows far apart stream together, each prefetched PF_AHEAD on. */
TARGET INLINE void NAME(rows_group)(const sl_kern_mv *mv, int o, int stride, int R, int fmt)
{
    const int C = mv->w->in, es = (int)elem_size(fmt), line = LINE / es, lines = C / line * line;
    const int vecs = C / LANES * LANES;
    const float *x = mv->x;
    const char *row[GROUP];
    vec a[GROUP];
    for (int k = 0; k < R; k++) {
        row[k] = (const char *)mv->w->data + (size_t)(o + k * stride) * C * es;
        a[k] = vzero();
    }
    int c = 0;
    for (; c < lines; c += line) {
        for (int k = 0; k < R; k++)
            _mm_prefetch(row[k] + (size_t)c * es + PF_AHEAD, _MM_HINT_T0);
        for (int v = 0; v < line; v += LANES) {
            vec xv = vloadx(x + c + v);
            for (int k = 0; k < R; k++)
                a[k] = vfma(vload_w(row[k], c + v, fmt), xv, a[k]);
        }
    }
    for (; c < vecs; c += LANES) {
        vec xv = vloadx(x + c);
        for (int k = 0; k < R; k++)
            a[k] = vfma(vload_w(row[k], c, fmt), xv, a[k]);
    }
    for (int k = 0; k < R; k++) {
        float dot = vhsum(a[k]);
        for (int t = vecs; t < C; t++)
            dot = fmaf(elem_f32(row[k], t, fmt), x[t], dot);
        mv->out[o + k * stride] = sl_kern_base(mv, o + k * stride) + dot;
    }
}

/* Outputs [o0, o1): GROUP equal parts streamed together, the leftover rows one at a time. */
TARGET INLINE void NAME(rows)(const sl_kern_mv *mv, int o0, int o1, int fmt)
{
    const int q = (o1 - o0) / GROUP;
    for (int i = 0; i < q; i++)
        NAME(rows_group)(mv, o0 + i, q, GROUP, fmt);
    for (int o = o0 + q * GROUP; o < o1; o++)
        NAME(rows_group)(mv, o, 0, 1, fmt);
}

TARGET static void NAME(rows_f32)(const sl_kern_mv *mv, int o0, int o1) { NAME(rows)(mv, o0, o1, SL_WF_F32); }
TARGET static void NAME(rows_f16)(const sl_kern_mv *mv, int o0, int o1) { NAME(rows)(mv, o0, o1, SL_WF_F16); }
TARGET static void NAME(rows_bf16)(const sl_kern_mv *mv, int o0, int o1) { NAME(rows)(mv, o0, o1, SL_WF_BF16); }

/* Q8_0 outputs o + k*stride: per block, the dot of its 32 values (widened) with x, times d. */
TARGET INLINE void NAME(q8_group)(const sl_kern_mv *mv, int o, int stride, int R)
{
    const int nb = sl_wmat_q8_blocks(mv->w->in);
    const int8_t *q[GROUP];
    const uint16_t *s[GROUP];
    vec a[GROUP];
    for (int k = 0; k < R; k++) {
        q[k] = (const int8_t *)mv->w->data + (size_t)(o + k * stride) * nb * SL_Q8_BLOCK;
        s[k] = mv->w->scales + (size_t)(o + k * stride) * nb;
        a[k] = vzero();
    }
    float d[GROUP][8]; /* the scales of 8 blocks in F32: broadcast from memory, not shuffled */
    for (int j0 = 0; j0 < nb; j0 += 8) {
        const int nj = nb - j0 < 8 ? nb - j0 : 8;
        for (int k = 0; k < R; k++)
            scales8(d[k], s[k] + j0, nj);
        for (int j = j0; j < j0 + nj; j++) {
            const float *xb = mv->x + j * SL_Q8_BLOCK;
            vec xv[SL_Q8_BLOCK / LANES];
            for (int v = 0; v < SL_Q8_BLOCK / LANES; v++)
                xv[v] = vloadx(xb + v * LANES);
            for (int k = 0; k < R; k++) {
                const int8_t *b = q[k] + j * SL_Q8_BLOCK;
                if (j % 2 == 0) _mm_prefetch((const char *)b + PF_AHEAD, _MM_HINT_T0);
                vec t = vmul(vload_q8(b), xv[0]);
                for (int v = 1; v < SL_Q8_BLOCK / LANES; v++)
                    t = vfma(vload_q8(b + v * LANES), xv[v], t);
                a[k] = vfma(t, vset1(d[k][j - j0]), a[k]);
            }
        }
    }
    for (int k = 0; k < R; k++)
        mv->out[o + k * stride] = sl_kern_base(mv, o + k * stride) + vhsum(a[k]);
}

TARGET static void NAME(rows_q8)(const sl_kern_mv *mv, int o0, int o1)
{
    const int q = (o1 - o0) / GROUP;
    for (int i = 0; i < q; i++)
        NAME(q8_group)(mv, o0 + i, q, GROUP);
    for (int o = o0 + q * GROUP; o < o1; o++)
        NAME(q8_group)(mv, o, 0, 1);
}

/* Rows c + k*stride (k < R) of a Conv1D F32 matrix added into part: each row is OC contiguous
 * floats and a stream runs on through the rows below, prefetched PF_AHEAD on. */
TARGET INLINE void NAME(band_rows)(float *part, const float *x, const float *w, int OC, int c, int stride, int R)
{
    const int vecs = OC / LANES * LANES;
    const float *row[GROUP];
    vec xs[GROUP];
    for (int k = 0; k < R; k++) {
        row[k] = w + (size_t)(c + k * stride) * OC;
        xs[k] = vset1(x[c + k * stride]);
    }
    for (int o = 0; o < vecs; o += LANES) {
        if (o % (LINE / 4) == 0)
            for (int k = 0; k < R; k++)
                _mm_prefetch((const char *)(row[k] + o) + PF_AHEAD, _MM_HINT_T0);
        vec a = vloadx(part + o);
        for (int k = 0; k < R; k++)
            a = vfma(xs[k], vloadx(row[k] + o), a);
        vstore(part + o, a);
    }
    for (int o = vecs; o < OC; o++)
        for (int k = 0; k < R; k++)
            part[o] = fmaf(x[c + k * stride], row[k][o], part[o]);
}

/* A band of rows [c0, c1): GROUP equal parts streamed together, the leftover rows one at a time. */
TARGET static void NAME(conv1d_band)(float *part, const float *x, const sl_wmat *w, int c0, int c1)
{
    const int q = (c1 - c0) / GROUP;
    memset(part, 0, (size_t)w->out * sizeof *part);
    for (int i = 0; i < q; i++)
        NAME(band_rows)(part, x, w->data, w->out, c0 + i, q, GROUP);
    for (int c = c0 + q * GROUP; c < c1; c++)
        NAME(band_rows)(part, x, w->data, w->out, c, 0, 1);
}

TARGET static void NAME(conv1d_sum)(const sl_kern_mv *mv, const float *parts, int n)
{
    const int OC = mv->w->out, vecs = OC / LANES * LANES;
    for (int o = 0; o < vecs; o += LANES) {
        vec v = mv->bias ? vloadx(mv->bias + o) : vzero();
        if (mv->accumulate) v = vadd(vloadx(mv->out + o), v);
        for (int b = 0; b < n; b++)
            v = vadd(v, vloadx(parts + (size_t)b * OC + o));
        vstore(mv->out + o, v);
    }
    for (int o = vecs; o < OC; o++) {
        float v = sl_kern_base(mv, o);
        for (int b = 0; b < n; b++)
            v += parts[(size_t)b * OC + o];
        mv->out[o] = v;
    }
}

/* Tiles: rows are contiguous in the 16-bit formats, so a tile is one run of elements. */
TARGET INLINE void NAME(widen)(float *dst, const uint16_t *src, size_t n, int fmt)
{
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        vstore(dst + i, vload_w(src + i, 0, fmt));
    for (; i < n; i++)
        dst[i] = elem_f32(src + i, 0, fmt);
}

TARGET static void NAME(tile_f16)(float *dst, const sl_wmat *w, int o0, int o1)
{
    NAME(widen)(dst, (const uint16_t *)w->data + (size_t)o0 * w->in, (size_t)(o1 - o0) * w->in, SL_WF_F16);
}

TARGET static void NAME(tile_bf16)(float *dst, const sl_wmat *w, int o0, int o1)
{
    NAME(widen)(dst, (const uint16_t *)w->data + (size_t)o0 * w->in, (size_t)(o1 - o0) * w->in, SL_WF_BF16);
}

TARGET static void NAME(tile_q8)(float *dst, const sl_wmat *w, int o0, int o1)
{
    const int C = w->in, nb = sl_wmat_q8_blocks(C), vecs = C / LANES * LANES;
    for (int o = o0; o < o1; o++) {
        const int8_t *q = (const int8_t *)w->data + (size_t)o * nb * SL_Q8_BLOCK;
        const uint16_t *s = w->scales + (size_t)o * nb;
        float *d = dst + (size_t)(o - o0) * C;
        for (int c = 0; c < vecs; c += LANES)
            vstore(d + c, vmul(vset1(_cvtsh_ss(s[c / SL_Q8_BLOCK])), vload_q8(q + c)));
        for (int c = vecs; c < C; c++)
            d[c] = _cvtsh_ss(s[c / SL_Q8_BLOCK]) * (float)q[c];
    }
}

/* SL_KERN_STREAMS parts of [0, n) read together, whole lines, each prefetched PF_AHEAD on. */
TARGET static uint64_t NAME(stream)(const void *p, size_t n)
{
    const unsigned char *s = p;
    const size_t part = n / SL_KERN_STREAMS / LINE * LINE;
    vbits acc[SL_KERN_STREAMS];
    for (int k = 0; k < SL_KERN_STREAMS; k++)
        acc[k] = bits_zero();
    for (size_t i = 0; i < part; i += LINE)
        for (int k = 0; k < SL_KERN_STREAMS; k++) {
            const unsigned char *line = s + k * part + i;
            _mm_prefetch((const char *)line + PF_AHEAD, _MM_HINT_T0);
            for (int v = 0; v < LINE; v += BITS_BYTES)
                acc[k] = bits_xor(acc[k], bits_load(line + v));
        }
    for (int k = 1; k < SL_KERN_STREAMS; k++)
        acc[0] = bits_xor(acc[0], acc[k]);
    return bits_low(acc[0]) ^ stream_tail(s, SL_KERN_STREAMS * part, n);
}

#undef TARGET
#undef NAME
#undef vec
#undef LANES
#undef vzero
#undef vset1
#undef vloadx
#undef vstore
#undef vfma
#undef vmul
#undef vadd
#undef vhsum
#undef vload_w
#undef vload_q8
#undef vbits
#undef BITS_BYTES
#undef bits_zero
#undef bits_load
#undef bits_xor
#undef bits_low
