/* id.c — session and run ids drawn from getrandom. */
#include "id.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

int sl_id_new(sl_id *id, sl_err *err)
{
    do {
        for (size_t got = 0; got < sizeof id->bytes;) {
            ssize_t n = getrandom(id->bytes + got, sizeof id->bytes - got, 0);
            if (n < 0 && errno != EINTR) return sl_fail(err, "cannot draw a random id: getrandom: %s", strerror(errno));
            if (n > 0) got += (size_t)n;
        }
    } while (sl_id_none(*id)); /* 2^-128: but 0 means none */
    return 0;
}

bool sl_id_equal(sl_id a, sl_id b) { return memcmp(a.bytes, b.bytes, sizeof a.bytes) == 0; }

bool sl_id_none(sl_id id)
{
    static const sl_id zero;
    return sl_id_equal(id, zero);
}
