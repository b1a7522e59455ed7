/* wire_seeds.c — writes the example messages of wire_check.h, made by our encoder, one file each
 * into a directory: the seed corpus `make fuzz` gives fuzz_wire. Usage: wire_seeds DIR */
#include "wire_check.h"

#include <stdio.h>

static int write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t written = fwrite(data, 1, size, f);
    return fclose(f) == 0 && written == size ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    sl_msg ex[WIRE_EXAMPLES];
    wire_examples(ex);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    int rc = 0;
    for (int i = 0; i < WIRE_EXAMPLES && rc == 0; i++) {
        char path[4096];
        sl_err err;
        snprintf(path, sizeof path, "%s/seed-%d-%s", argv[1], i, sl_msg_kind_name(ex[i].kind));
        if (sl_wire_encode(&ex[i], &buf, &err) != 0) {
            fprintf(stderr, "wire_seeds: example %d: %s\n", i, err.msg);
            rc = 1;
        } else if (write_file(path, buf.data, buf.size) != 0) {
            perror(path);
            rc = 1;
        }
    }
    msgpack_sbuffer_destroy(&buf);
    return rc;
}
