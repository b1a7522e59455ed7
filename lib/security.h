/* security.h — CurveZMQ on every link of a pipeline: the certificates the topology names, the
 * ZAP handler that lets only the allowed keys connect to this process, and whose key a message
 * came with.
 *
 * Certificates are czmq's (zcert): DIR/NAME.cert holds a public key, DIR/NAME.cert_secret (on its
 * owner's host only, mode 0600) the key pair; zmq-splitlearn-keygen writes both. A process holds
 * one key pair (a node's cert, a client's or trainer's --cert) and, when it binds, accepts exactly
 * the certificates it is given; every other key, and every peer without CURVE, gets nothing
 * through and is logged (once per key and address, at most a few lines a minute).
 * Ownership: the caller owns the sl_security; sockets it sets up stay the caller's. */
#ifndef SL_SECURITY_H
#define SL_SECURITY_H

#include "err.h"

#include <czmq.h>
#include <stdbool.h>

#define SL_KEY_TEXT 41 /* a public key in Z85 (40 characters) and its NUL */

typedef struct sl_security sl_security;

/* Called from the ZAP handler's thread for each refused peer: must be thread-safe. */
typedef void (*sl_security_log)(void *ctx, const char *line);

/* Loads the key pair in own_secret (a .cert_secret file) and the public certificates
 * certs/NAME.cert of the names in accept (n_accept of them; 0: this process only connects).
 * NULL with err naming the file when a certificate is missing or not one. */
sl_security *sl_security_new(const char *certs, const char *own_secret, const char *const *accept, int n_accept,
                             sl_security_log log, void *log_ctx, sl_err *err);
void sl_security_destroy(sl_security **self);

/* Makes sock (not yet bound) a CURVE server with this process's key pair. */
void sl_security_serve(const sl_security *self, zsock_t *sock);

/* Makes sock (not yet connected) a CURVE client with this process's key pair that accepts only
 * the server whose certificate is certs/peer.cert. */
int sl_security_connect_to(const sl_security *self, zsock_t *sock, const char *peer, sl_err *err);

/* The certificate name of a public key (Z85), among those accepted; NULL when none. */
const char *sl_security_name_of(const sl_security *self, const char *key);

/* The public key (Z85) of this process's key pair. */
const char *sl_security_public_key(const sl_security *self);

/* Writes a new key pair as dir/name.cert and dir/name.cert_secret (mode 0600), refusing to
 * replace either file. */
int sl_security_keygen(const char *dir, const char *name, sl_err *err);

#endif
