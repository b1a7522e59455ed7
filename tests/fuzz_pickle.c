/* fuzz_pickle.c — libFuzzer harness for the restricted unpickler (`make fuzz`, seeded with our
 * writer's pickles by `test_torch --seeds`): any bytes are a state dict whose every tensor lies
 * inside its storage, or a refusal; never a crash, a read outside the input or a leak. */
#include "pickle.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_err err;
    sl_pickle *p = sl_pickle_load(data, size, "fuzz.pkl", 0, &err);
    if (!p) return 0;
    const sl_pickle_tensor *tensors;
    size_t n = 0;
    if (sl_pickle_tensors(p, &tensors, &n, &err) == 0)
        for (size_t i = 0; i < n; i++) {
            const sl_pickle_tensor *t = &tensors[i];
            uint64_t last = t->offset;
            for (int d = 0; d < t->ndim && t->numel; d++)
                last += (uint64_t)(t->shape[d] - 1) * (uint64_t)t->stride[d];
            if (t->numel && last >= t->storage_numel) __builtin_trap(); /* a tensor outside its storage */
            if (strlen(t->name) > size) __builtin_trap();
        }
    const char *const *strings;
    int64_t value;
    bool flag;
    sl_pickle_strings(p, &strings, &n, &err);
    sl_pickle_int(p, &value, &err);
    sl_pickle_dict_bool(p, "little_endian", &flag, &err);
    sl_pickle_destroy(&p);
    return 0;
}
