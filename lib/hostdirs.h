/* hostdirs.h — a split laid out one directory per host of a topology, ready to copy to each host
 * (zmq-splitlearn-split --host-dirs):
 *
 *   SPLIT/hosts/<host>/<topology file's name>   the topology (its parts resolve beside it)
 *   SPLIT/hosts/<host>/<parts>/split.json       the index, as in SPLIT
 *   SPLIT/hosts/<host>/<parts>/<role>/...       every part's metadata, and the part files of that
 *                                               host's nodes only (hard links when possible)
 *   SPLIT/hosts/<host>/<certs>/                 with security = curve: every public certificate
 *                                               the topology names (nodes, clients, trainers) and
 *                                               the key pairs (.cert_secret, mode 0600) of that
 *                                               host's nodes only, those found in certs here
 *
 * where <parts> and <certs> are the topology's `parts` and `certs` as written: relative, so that
 * a host's [host.NAME] dir holding a copy of its directory is where its nodes find them. A key
 * pair made on its own host (and absent here) stays there; no host gets another host's. */
#ifndef SL_HOSTDIRS_H
#define SL_HOSTDIRS_H

#include "err.h"
#include "part.h"
#include "topology.h"

/* Whether the layout can be written below split_dir for t, before anything is split: t's parts
 * (and with CURVE its certs) is a relative path inside a host directory, every public certificate
 * it names is in certs here, and split_dir/hosts does not exist yet (a directory of an earlier
 * layout could keep part files or key pairs a host must not have). */
int sl_hostdirs_check(const char *split_dir, const sl_topology *t, sl_err *err);

/* Writes the layout for the split just written to split_dir (its parts[0..n), each run by a
 * node of t) and the topology file topology_path. */
int sl_hostdirs_write(const char *split_dir, const char *topology_path, const sl_topology *t, const sl_part_info *parts,
                      int n, sl_err *err);

#endif
