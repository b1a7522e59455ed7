/* hostdirs.h — a split laid out one directory per host of a topology, ready to copy to each host
 * (zmq-splitlearn-split --host-dirs):
 *
 *   SPLIT/hosts/<host>/<topology file's name>   the topology (its parts resolve beside it)
 *   SPLIT/hosts/<host>/<parts>/split.json       the index, as in SPLIT
 *   SPLIT/hosts/<host>/<parts>/<role>/...       every part's metadata, and the part files of that
 *                                               host's nodes only (hard links when possible)
 *
 * where <parts> is the topology's `parts` as written: relative, so that a host's [host.NAME] dir
 * holding a copy of its directory is where its nodes find their parts. */
#ifndef SL_HOSTDIRS_H
#define SL_HOSTDIRS_H

#include "err.h"
#include "part.h"
#include "topology.h"

/* Whether the layout can be written below split_dir for t, before anything is split: t's parts
 * is a relative path inside a host directory, and split_dir/hosts does not exist yet (a directory
 * of an earlier layout could keep part files a host must not have). */
int sl_hostdirs_check(const char *split_dir, const sl_topology *t, sl_err *err);

/* Writes the layout for the split just written to split_dir (its parts[0..n), each run by a
 * node of t) and the topology file topology_path. */
int sl_hostdirs_write(const char *split_dir, const char *topology_path, const sl_topology *t, const sl_part_info *parts,
                      int n, sl_err *err);

#endif
