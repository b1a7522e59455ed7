/* role.c — the names of the three stage roles. */
#include "role.h"

#include <string.h>

static const char *const role_names[] = {"bottom", "trunk", "top"};

const char *sl_role_name(sl_role role) { return role_names[role]; }

int sl_role_parse(const char *name, sl_role *out)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(name, role_names[i]) == 0) {
            *out = (sl_role)i;
            return 0;
        }
    return -1;
}
