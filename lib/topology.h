/* topology.h — the INI file that says which nodes form a pipeline, in chain order, and how each
 * runs. Format and every key: config/README.md. Everything is validated before any socket
 * opens; each error names file:line and the fix. */
#ifndef SL_TOPOLOGY_H
#define SL_TOPOLOGY_H

#include "cutguard.h"
#include "dtype.h"
#include "err.h"
#include "role.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

struct sl_part_info;

#define SL_MAX_NODES 32
#define SL_MAX_ENDPOINT 256
#define SL_MAX_HOST_TEXT 512 /* a host's run, dir and bin */

typedef struct sl_topo_node {
    char name[64]; /* NAME of [node.NAME] */
    int line;      /* where its section starts */
    sl_role role;
    int first, last;              /* layers = first-last: blocks [first, last) */
    char listen[SL_MAX_ENDPOINT]; /* its ROUTER binds here; the previous stage (or clients) connect */
    char host[128];               /* where the launcher starts it (default localhost) */
    int threads;                  /* compute threads, 0: one per CPU */
    bool pin;                     /* pin compute threads one per CPU */
    sl_dtype kv;                  /* what its KV cache holds: f32, or f16 (half the memory; kv = f16) */
    char cert[64];                /* its CurveZMQ certificate's name in certs (security = curve) */
    bool train;                   /* it accepts training messages (train = yes; default: the pipeline's) */
    bool restart;                 /* the launcher starts it again when it dies (its own or [pipeline]'s) */
    /* bytes a training run's saves may hold on its disk (its own max_checkpoint_mb or [pipeline]'s) */
    unsigned long long max_checkpoint;
    /* Defences at the cut (cutguard.h): the bottom's on the rows it sends (clip, noise), the
     * top's on the gradient it sends back in training (grad_clip, grad_noise); 0: none. */
    float clip, noise, grad_clip, grad_noise;
} sl_topo_node;

#define SL_MAX_PARTIES 64 /* names in a clients or trainers list */

typedef struct sl_party_list {
    char names[SL_MAX_PARTIES][64];
    int n;
} sl_party_list;

/* [host.NAME]: how the launcher reaches a host. What is not given is the launcher's default
 * (tools/launch.c): run over ssh, or directly for this machine; its own working and bin
 * directories. */
typedef struct sl_topo_host {
    char name[128];             /* NAME of [host.NAME], as nodes' host = NAME */
    int line;                   /* where its section starts */
    bool has_run;               /* run given (an empty run: this machine, no prefix) */
    char run[SL_MAX_HOST_TEXT]; /* command prefix that runs a command there (split with sl_split_words) */
    char dir[SL_MAX_HOST_TEXT]; /* absolute working directory of its nodes there, "" when not given */
    char bin[SL_MAX_HOST_TEXT]; /* absolute directory of the programs there, "" when not given */
} sl_topo_host;

typedef struct sl_topology {
    char path[PATH_MAX];
    char name[128];
    char parts[PATH_MAX];       /* split directory, resolved */
    char parts_given[PATH_MAX]; /* parts as written */
    int parts_line;             /* where it is written */
    sl_dtype activations;       /* dtype of activations on the wire: f32 (default), f16, bf16 */
    double timeout;             /* seconds a client waits for an answer (default 30) */
    double idle_timeout;        /* seconds before an idle session is dropped (default 600) */
    int max_sessions;           /* sessions a node keeps; the least recently used goes (default 64) */
    size_t max_message;         /* bytes; larger messages are refused (default 256 MiB) */
    int hwm;                    /* ZeroMQ high-water mark in messages (default 1000) */
    bool verify;                /* nodes recompute their part's SHA-256 at start */
    int max_train_tokens;       /* B x T of a training batch a trunk accepts (default 16384) */
    /* the nodes' default max_checkpoint (default 64 GiB) */
    unsigned long long max_checkpoint;
    char checkpoint_root[PATH_MAX]; /* where trunks read and write checkpoints ("": their working directory) */
    bool curve;                     /* security = curve: every link encrypted and authenticated */
    char certs[PATH_MAX];           /* the public certificates (and, on each host, its own secret one) */
    char certs_given[PATH_MAX];     /* certs as written */
    int certs_line;                 /* where certs is written (0: it is not) */
    sl_party_list clients;          /* names of the certificates that may generate */
    sl_party_list trainers;         /* names of the certificates that may train, save and load */
    bool restart;                   /* the nodes' default restart (default no) */
    sl_topo_node nodes[SL_MAX_NODES];
    int n_nodes;
    sl_topo_host hosts[SL_MAX_NODES]; /* the [host.NAME] sections; each names the host of some node */
    int n_hosts;
} sl_topology;

/* Parses and validates path ("-": standard input). With check_parts, the parts directory must
 * exist and its index (split.json) name a part for every node's layers; the part files need be
 * only on the hosts that run them (each node opens its own). Relative paths in the file are taken
 * beside it (from standard input: in the working directory). */
int sl_topology_load(const char *path, sl_topology *t, bool check_parts, sl_err *err);

/* The same from text (a topology the launcher shipped); origin names it in errors; relative
 * paths are the working directory's. */
int sl_topology_parse(const char *text, const char *origin, sl_topology *t, bool check_parts, sl_err *err);

/* Finds each node's part among parts[0..n) (the index of a split; where names it in errors):
 * part_of[i] is node i's. Fails, naming file:line, when a node's layers or role match no part
 * or the top does not end at the model's last layer. */
struct sl_part_info;
int sl_topology_match_parts(const sl_topology *t, const struct sl_part_info *parts, int n, const char *where,
                            int *part_of, sl_err *err);

/* Whether name is in list. */
bool sl_party_listed(const sl_party_list *list, const char *name);

/* Whether endpoint is on this machine only: ipc://, inproc:// or a loopback TCP address. */
bool sl_endpoint_is_local(const char *endpoint);

/* The node called name, or NULL. */
const sl_topo_node *sl_topology_node(const sl_topology *t, const char *name);

/* Whether host (a node's host = ...) names this machine: localhost, 127.0.0.1, ::1 or its hostname. */
bool sl_topology_host_is_local(const char *host);

/* Position of node in the chain (0 = bottom). */
int sl_topology_index(const sl_topology *t, const sl_topo_node *node);

/* The [host.NAME] section, or NULL when the file has none (every setting is the default). */
const sl_topo_host *sl_topology_host(const sl_topology *t, const char *name);

/* Writes to path a topology that runs the n parts (chain order) on this host: [pipeline] name and
 * parts (parts_dir made absolute, so that the file works from any directory), then one
 * [node.<part>] each, listening on tcp://127.0.0.1 from port on. tool names the writer in the
 * file's first comment. */
int sl_topology_write_local(const char *path, const struct sl_part_info *parts, int n, const char *name,
                            const char *parts_dir, int port, const char *tool, sl_err *err);

/* The defence of the rows the bottom sends (its clip and noise) and of the gradient the top sends
 * back (its grad_clip and grad_noise). */
sl_cut_defence sl_topology_bottom_defence(const sl_topology *t);
sl_cut_defence sl_topology_top_defence(const sl_topology *t);

#endif
