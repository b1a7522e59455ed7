/* role.h — what a stage does in the pipeline: the bottom embeds tokens, trunks run blocks only,
 * the top ends with the LM head. */
#ifndef SL_ROLE_H
#define SL_ROLE_H

typedef enum sl_role { SL_ROLE_BOTTOM, SL_ROLE_TRUNK, SL_ROLE_TOP } sl_role;

/* "bottom", "trunk" or "top": the spelling of metadata, topologies and directory names. */
const char *sl_role_name(sl_role role);

/* The role spelled name; -1 when it is none of the three. */
int sl_role_parse(const char *name, sl_role *out);

#endif
