/* safetensors_seeds.c — writes safetensors files with our writer, one file each into a
 * directory: the seed corpus `make fuzz` gives fuzz_safetensors (tensors of each dtype and rank,
 * with and without metadata, and parts as a split writes them: F16, and Q8_0 with its scales). Usage: safetensors_seeds
 * DIR */
#include "fileio.h"
#include "part.h"
#include "safetensors.h"

#include <stdio.h>
#include <unistd.h>

static const float values[24] = {1.5f, -2, 3.25f, 0,  0.125f, 7,  -8, 96, 0.5f, -0.75f, 2,  3,
                                 -1,   4,  5,     -6, 9,      10, 11, 12, -13,  14,     15, 16};

/* One file of three tensors (ranks 1 and 2, one empty) stored as dtype, metadata when asked. */
static int write_tensors(const char *dir, sl_dtype dtype, bool metadata, sl_err *err)
{
    const int64_t row[1] = {24}, grid[2] = {4, 6}, none[2] = {0, 3};
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%s%s.safetensors", dir, sl_dtype_lower(dtype), metadata ? "-metadata" : "");
    sl_st_writer *w = sl_st_writer_new();
    int rc = w ? 0 : sl_fail(err, "out of memory");
    if (rc == 0) rc = sl_st_writer_add_f32(w, "h.0.attn.bias", dtype, values, 1, row, err);
    if (rc == 0) rc = sl_st_writer_add_f32(w, "wte.weight", dtype, values, 2, grid, err);
    if (rc == 0) rc = sl_st_writer_add_f32(w, "empty", dtype, values, 2, none, err);
    if (rc == 0 && metadata) rc = sl_st_writer_set_metadata(w, "format", "pt", err);
    if (rc == 0 && metadata) rc = sl_st_writer_set_metadata(w, "note", "a \"quoted\" \\ value \xc3\xa9", err);
    if (rc == 0) rc = sl_st_writer_write(w, path, NULL, err);
    sl_st_writer_destroy(&w);
    return rc;
}

/* The part file a split writes for a one-block bottom of a small GPT-2, its weights stored as
 * format (its metadata left out). */
static int write_part(const char *dir, sl_wformat format, const char *label, sl_err *err)
{
    const sl_config cfg = {.n_layer = 2,
                           .n_embd = 32,
                           .n_head = 2,
                           .n_inner = 128,
                           .vocab_size = 64,
                           .n_positions = 8,
                           .layer_norm_epsilon = 1e-5};
    char sub[4096], from[4096 + 64], to[4096 + 64];
    snprintf(sub, sizeof sub, "%s/part-%s", dir, label);
    sl_params p;
    sl_part_info info;
    if (sl_params_alloc(&p, &cfg, 0, 1, true, false, err) != 0) return -1;
    sl_params_init_gpt2(&p, 1);
    int rc = sl_mkdirs(sub, err) == 0
                 ? sl_part_write(&p, "bottom", SL_ROLE_BOTTOM, format, sub, "bottom", NULL, NULL, &info, err)
                 : -1;
    sl_params_free(&p);
    snprintf(from, sizeof from, "%s/bottom.safetensors", sub);
    snprintf(to, sizeof to, "%s/seed-part-%s.safetensors", dir, label);
    if (rc == 0 && rename(from, to) != 0) rc = sl_fail(err, "%s: cannot move it to %s", from, to);
    snprintf(from, sizeof from, "%s/bottom_metadata.json", sub);
    unlink(from);
    rmdir(sub);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    sl_err err = {{0}};
    const sl_dtype dtypes[3] = {SL_F32, SL_F16, SL_BF16};
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = write_tensors(argv[1], dtypes[i], i == 0, &err);
    if (rc == 0) rc = write_tensors(argv[1], SL_F32, false, &err);
    if (rc == 0) rc = write_part(argv[1], SL_WF_F16, "f16", &err);
    if (rc == 0) rc = write_part(argv[1], SL_WF_Q8_0, "q8_0", &err);
    if (rc != 0) fprintf(stderr, "safetensors_seeds: %s\n", err.msg);
    return rc == 0 ? 0 : 1;
}
