/* fuzz_topology.c — libFuzzer harness for topology files (`make fuzz`): any text is a valid
 * topology or a file:line error, never a crash. */
#include "topology.h"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz.ini", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    static sl_topology t;
    sl_err err;
    sl_topology_load(path, &t, false, &err);
    close(fd);
    return 0;
}
