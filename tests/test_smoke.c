/* test_smoke.c — placeholder replaced by real tests; checks the error helper. */
#include "check.h"
#include "err.h"
#include <string.h>
int main(void)
{
    sl_err e;
    CHECK(sl_fail(&e, "x %d", 1) == -1, "sl_fail returns -1");
    sl_err_prefix(&e, "f");
    CHECK(strcmp(e.msg, "f: x 1") == 0, "prefix: %s", e.msg);
    return check_done();
}
