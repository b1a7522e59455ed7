/* train.c — zmq-splitlearn-train: split learning over the parts a topology names. Every stage
 * keeps its own parameters and AdamW state; token ids and labels are used by the bottom and the
 * top only. Prints "step K loss X" for every step, logs CSV, checkpoints as split directories,
 * resumes exactly, and plots the losses (gnuplot) at the end. */
#include "clock.h"
#include "cli.h"
#include "cpu.h"
#include "data.h"
#include "fileio.h"
#include "gen_opts.h"
#include "tool.h"
#include "train_report.h"
#include "topology.h"
#include "trainer.h"

#include <cJSON.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char prog[] = "zmq-splitlearn-train";

static const char usage[] =
    "usage: zmq-splitlearn-train TOPOLOGY.ini (--data FILE... | --ids 1,2,3) [options]\n"
    "\n"
    "  --batch B --seq-len T       sequences per micro-batch and their length (default 4 x 64, or\n"
    "                              n_positions when less; --ids trains on exactly that one\n"
    "                              sequence: B 1, T its length)\n"
    "  --steps N | --epochs E      how long (default 100 steps; with --ids an epoch is a step)\n"
    "  --lr LR --weight-decay WD   AdamW (default 1e-3, 0.01; betas 0.9, 0.999, eps 1e-8)\n"
    "  --warmup STEPS --schedule cosine|constant --grad-accum K --grad-clip C\n"
    "  --eval-data FILE --eval-every N   held-out loss (mean of up to 8 batches) every N steps\n"
    "                              (default 100) and at the last; without --eval-data the last\n"
    "                              5% of --data is held out\n"
    "  --recover-wait S            when a trunk's connection drops, wait up to S seconds (default 60) for\n"
    "                              it to come back (restart = yes), reload the last checkpoint on every\n"
    "                              stage and go on; 0: stop at once, naming the checkpoint to --resume\n"
    "  --save-dir DIR --save-every N     checkpoints: a split directory the pipeline can load,\n"
    "                              every N steps (default 100; 0: only at the end) and at the end\n"
    "  --resume DIR                continue a checkpoint exactly (same losses as without a stop)\n"
    "  --seed S --log FILE (CSV; default SAVE_DIR/train_log.csv) --local\n"
    "  --vocab DIR                 the tokenizer of --data (default: the parts', else the bundled one)\n"
    "  --threads N --pin           compute threads (default one per CPU); pin them one per CPU\n"
    "  --cert FILE                 the trainer's secret certificate (security = curve; a name in trainers)\n"
    "  --nopeek LAMBDA             NoPeek: adds LAMBDA x the distance correlation between the bottom's\n"
    "                              input embeddings and its output (over each batch's rows) to the\n"
    "                              loss it trains on; the step lines show it (dcor X), the loss stays\n"
    "                              the cross-entropy (docs/PRIVACY.md)\n"
    "  --noise-seed S              the noise of the topology's clip/noise defences from seed S, for\n"
    "                              experiments only: it makes the noise predictable (default: the\n"
    "                              kernel's cryptographic generator)\n"
    "  --help, --version\n"
    "\n"
    "This process runs the bottom and the top (token ids and labels never leave it, and it binds\n"
    "their listen endpoints); the trunks train on their nodes, which must be running\n"
    "(zmq-splitlearn-launch TOPOLOGY --only trunk1 ...), each updating itself with its own AdamW\n"
    "state. A checkpoint is written where each part runs: the trunks write theirs under the\n"
    "topology's checkpoint_root on their hosts, and --resume DIR reads each part where it was\n"
    "written. --local runs every stage here instead.\n"
    "Before step 1 every place a save writes to is checked (--save-dir here; each trunk asked on its\n"
    "host with a dry-run save, which writes nothing: \"trunk NAME will save to HOST:/abs/path\", or\n"
    "exit 2 with what to change), and training without --save-dir says that nothing will be kept.\n"
    "Every save and a resume are announced.\n"
    "SIGINT or SIGTERM finishes the step, saves a checkpoint (with --save-dir), then exits.\n"
    "When a node stops mid-training the trainer stops too (at once when it was the first or\n"
    "last trunk, else after the topology's timeout) and names the last checkpoint to --resume\n"
    "from.\n"
    "\n"
    "exit status: 0 done (or stopped by SIGTERM); 1 failure; 2 usage or configuration error (options,\n"
    "topology, data files, a save location that cannot work); 3 a stage did not answer in time;\n"
    "130 stopped by SIGINT\n";

static volatile sig_atomic_t stop_requested; /* the signal that asked to stop, 0: none */
static void on_signal(int sig) { stop_requested = sig; }

typedef struct run {
    const char *topology, *resume, *save_dir, *eval_file, *log_path, *vocab;
    const char *files[64];
    int n_files;
    int32_t ids[4096];
    int n_ids;
    long steps, epochs, eval_every, save_every, threads;
    double recover_wait; /* seconds to wait for a lost trunk to come back (0: stop at once) */
    bool local, pin;
    uint64_t seed;
    sl_trainer_opts opts;
} run;

/* A file named with --data or --eval-data (NULL: none) must be a file: the error says what it is. */
static int check_text_file(const char *option, const char *path, sl_err *err)
{
    struct stat st;
    if (!path) return 0;
    if (stat(path, &st) != 0) return sl_fail(err, "%s %s: %s", option, path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return sl_fail(err, "%s %s is a directory: give the text files in it (e.g. %s/*.txt)", option, path, path);
    return 0;
}

static int parse(run *r, int argc, char **argv, sl_err *err)
{
    static const struct option options[] = {{"data", 1, 0, 'D'},
                                            {"ids", 1, 0, 'i'},
                                            {"batch", 1, 0, 'b'},
                                            {"seq-len", 1, 0, 'T'},
                                            {"steps", 1, 0, 's'},
                                            {"epochs", 1, 0, 'e'},
                                            {"lr", 1, 0, 'l'},
                                            {"weight-decay", 1, 0, 'w'},
                                            {"warmup", 1, 0, 'W'},
                                            {"schedule", 1, 0, 'S'},
                                            {"grad-accum", 1, 0, 'k'},
                                            {"grad-clip", 1, 0, 'c'},
                                            {"eval-data", 1, 0, 'E'},
                                            {"eval-every", 1, 0, 'n'},
                                            {"save-dir", 1, 0, 'o'},
                                            {"save-every", 1, 0, 'N'},
                                            {"resume", 1, 0, 'r'},
                                            {"seed", 1, 0, 'x'},
                                            {"threads", 1, 0, 't'},
                                            {"log", 1, 0, 'L'},
                                            {"vocab", 1, 0, 'y'},
                                            {"local", 0, 0, 'Z'},
                                            {"pin", 0, 0, 'P'},
                                            {"cert", 1, 0, 'C'},
                                            {"recover-wait", 1, 0, 'R'},
                                            {"nopeek", 1, 0, 'Y'},
                                            {"noise-seed", 1, 0, 'Q'},
                                            SL_TOOL_OPTIONS,
                                            {0, 0, 0, 0}};
    long v;
    double d;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1 && rc == 0) {
        switch (c) {
        case 'D':
            if (r->n_files == 64) return sl_fail(err, "--data: at most 64 files");
            r->files[r->n_files++] = optarg;
            for (; optind < argc && argv[optind][0] != '-'; optind++)
                if (r->n_files < 64) r->files[r->n_files++] = argv[optind];
            break;
        case 'i':
            rc = (r->n_ids = sl_parse_int_list(optarg, "--ids", r->ids, 4096, err)) < 0 ? -1 : 0;
            break;
        case 'b':
            rc = sl_parse_long(optarg, "--batch", 1, 4096, &v, err), r->opts.batch = (int)v;
            break;
        case 'T':
            rc = sl_parse_long(optarg, "--seq-len", 2, 1 << 16, &v, err), r->opts.seq_len = (int)v;
            break;
        case 's':
            rc = sl_parse_long(optarg, "--steps", 1, __LONG_MAX__, &r->steps, err);
            break;
        case 'e':
            rc = sl_parse_long(optarg, "--epochs", 1, 1 << 20, &r->epochs, err);
            break;
        case 'l':
            rc = sl_parse_double(optarg, "--lr", 0, 10, &d, err), r->opts.adamw.lr = (float)d;
            break;
        case 'w':
            rc = sl_parse_double(optarg, "--weight-decay", 0, 10, &d, err), r->opts.adamw.weight_decay = (float)d;
            break;
        case 'W':
            rc = sl_parse_long(optarg, "--warmup", 0, __LONG_MAX__, &r->opts.warmup, err);
            break;
        case 'S':
            if (strcmp(optarg, "cosine") && strcmp(optarg, "constant"))
                rc = sl_fail(err, "--schedule: cosine or constant");
            r->opts.cosine = !strcmp(optarg, "cosine");
            break;
        case 'k':
            rc = sl_parse_long(optarg, "--grad-accum", 1, 1 << 16, &v, err), r->opts.grad_accum = (int)v;
            break;
        case 'c':
            rc = sl_parse_double(optarg, "--grad-clip", 0, 1e9, &d, err), r->opts.grad_clip = (float)d;
            break;
        case 'Y':
            rc = sl_parse_double(optarg, "--nopeek", 0, 1e6, &d, err), r->opts.privacy.nopeek = (float)d;
            break;
        case 'Q':
            rc = sl_parse_long(optarg, "--noise-seed", 0, __LONG_MAX__, &v, err);
            r->opts.privacy.seeded = true, r->opts.privacy.noise_seed = (uint64_t)v;
            break;
        case 'E':
            r->eval_file = optarg;
            break;
        case 'n':
            rc = sl_parse_long(optarg, "--eval-every", 1, __LONG_MAX__, &r->eval_every, err);
            break;
        case 'o':
            r->save_dir = optarg;
            break;
        case 'N':
            rc = sl_parse_long(optarg, "--save-every", 0, __LONG_MAX__, &r->save_every, err);
            break;
        case 'r':
            r->resume = optarg;
            break;
        case 'x':
            rc = sl_parse_long(optarg, "--seed", 0, __LONG_MAX__, &v, err), r->seed = (uint64_t)v;
            break;
        case 't':
            rc = sl_parse_long(optarg, "--threads", 0, 1024, &r->threads, err);
            break;
        case 'P':
            r->pin = true;
            break;
        case 'C':
            r->opts.cert = optarg;
            break;
        case 'R':
            rc = sl_parse_double(optarg, "--recover-wait", 0, 86400, &r->recover_wait, err);
            break;
        case 'L':
            r->log_path = optarg;
            break;
        case 'y':
            r->vocab = optarg;
            break;
        case 'Z':
            r->local = true;
            break;
        default: /* --help, --version or a bad option: nothing more to do */
            exit(sl_tool_other_option(c, prog, usage));
        }
    }
    if (rc != 0) return -1;
    if (argc - optind != 1) return sl_fail(err, "give one TOPOLOGY.ini");
    r->topology = argv[optind];
    if (!r->n_files == !r->n_ids) return sl_fail(err, "give --data FILE... or --ids (one of them)");
    if (r->steps && r->epochs) return sl_fail(err, "give --steps or --epochs, not both");
    for (int i = 0; i <= r->n_files; i++)
        if (check_text_file(i < r->n_files ? "--data" : "--eval-data", i < r->n_files ? r->files[i] : r->eval_file,
                            err) != 0)
            return -1;
    if (r->n_ids) {
        if (r->n_ids < 2) return sl_fail(err, "--ids needs at least 2 tokens");
        r->opts.batch = 1;
        r->opts.seq_len = r->n_ids;
    }
    return 0;
}

/* What the command line asks of the model it trains (from the split it starts or resumes from):
 * a failure here is a usage error. The default sequence length fits the model. */
static int check_against_model(run *r, const sl_config *cfg, const sl_topology *topo, sl_err *err)
{
    if (!r->opts.seq_len) r->opts.seq_len = cfg->n_positions < 64 ? cfg->n_positions : 64;
    if (r->opts.seq_len > cfg->n_positions)
        return sl_fail(err, "%s %d is longer than the model's n_positions (%d)",
                       r->n_ids ? "--ids: a sequence of" : "--seq-len", r->opts.seq_len, cfg->n_positions);
    if (!r->local && topo->n_nodes > 2 && (long)r->opts.batch * r->opts.seq_len > topo->max_train_tokens)
        return sl_fail(err, "a batch of %d x %d tokens is over %s's max_train_tokens (%d), the most its trunks take",
                       r->opts.batch, r->opts.seq_len, topo->path, topo->max_train_tokens);
    for (int i = 0; i < r->n_ids; i++)
        if (r->ids[i] < 0 || r->ids[i] >= cfg->vocab_size)
            return sl_fail(err, "--ids: token id %d (entry %d) is outside the model's vocabulary (0..%d)", r->ids[i],
                           i + 1, cfg->vocab_size - 1);
    return 0;
}

/* A run writes its checkpoints into a directory of its own, or into the one it resumes: a save
 * of this run over another run's checkpoint would mix the two if it stopped half-way. */
static int check_save_dir(const run *r, sl_err *err)
{
    char index[PATH_MAX + 16];
    if (!r->save_dir) return 0;
    snprintf(index, sizeof index, "%s/split.json", r->save_dir);
    if (access(index, F_OK) != 0 || (r->resume && sl_same_dir(r->resume, r->save_dir))) return 0;
    return sl_fail(err, "--save-dir %s holds a checkpoint already: continue it with --resume %s, or save elsewhere",
                   r->save_dir, r->save_dir);
}

/* The micro-batches of step `step` (K of them) into ids and targets. */
static void step_batch(run *r, sl_data *data, long step, int32_t *ids, int32_t *targets)
{
    const int K = r->opts.grad_accum, BT = r->opts.batch * r->opts.seq_len;
    for (int k = 0; k < K; k++) {
        if (data) {
            sl_data_batch(data, step * K + k, r->opts.batch, r->seed, ids + (size_t)k * BT, targets + (size_t)k * BT);
            continue;
        }
        memcpy(ids + (size_t)k * BT, r->ids, (size_t)BT * sizeof *ids);
        for (int t = 0; t < BT; t++)
            targets[(size_t)k * BT + t] = t + 1 < BT ? r->ids[t + 1] : -1;
    }
}

/* The mean loss of up to 8 batches of eval into *loss. */
static int evaluate(run *r, sl_trainer *tr, sl_data *eval, int32_t *ids, int32_t *targets, float *loss, sl_err *err)
{
    int batches = sl_data_sequences(eval) / r->opts.batch;
    if (batches > 8) batches = 8;
    if (batches < 1) batches = 1;
    double sum = 0;
    for (int b = 0; b < batches; b++) {
        float l;
        sl_data_batch(eval, b, r->opts.batch, 12345, ids, targets);
        if (sl_trainer_eval(tr, ids, targets, &l, err) != 0) return -1;
        sum += l;
    }
    *loss = (float)(sum / batches);
    return 0;
}

/* The plot's title: what was trained on, the learning rate and the batch. */
static void plot_title(const run *r, char *out, size_t size)
{
    char data[PATH_MAX + 64];
    if (r->n_files) {
        const char *base = strrchr(r->files[0], '/') ? strrchr(r->files[0], '/') + 1 : r->files[0];
        snprintf(data, sizeof data, "%s%s", base, r->n_files > 1 ? " and more" : "");
    } else {
        snprintf(data, sizeof data, "--ids (%d tokens)", r->n_ids);
    }
    int len =
        snprintf(out, size, "%s: lr %g, batch %d x %d", data, (double)r->opts.adamw.lr, r->opts.batch, r->opts.seq_len);
    if (r->opts.grad_accum > 1 && len > 0 && (size_t)len < size)
        snprintf(out + len, size - (size_t)len, " x %d accumulated", r->opts.grad_accum);
}

/* Adds to a failed run's error where to continue from: dir at step (dir NULL: none). */
static void name_last_checkpoint(const char *dir, long step, sl_err *err)
{
    size_t len = strlen(err->msg);
    if (!dir)
        snprintf(err->msg + len, sizeof err->msg - len,
                 "\nno checkpoint was written (--save-dir DIR keeps one every --save-every steps)");
    else
        snprintf(err->msg + len, sizeof err->msg - len,
                 "\nthe last checkpoint is %s (step %ld): start the stopped node again and continue with --resume %s",
                 dir, step, dir);
}

/* The training text and the held-out text the run reads. */
typedef struct corpus {
    sl_tokenizer *tok;
    sl_data *data, *eval;
} corpus;

static void corpus_free(corpus *c)
{
    sl_data_destroy(&c->data);
    sl_data_destroy(&c->eval);
    sl_tokenizer_destroy(&c->tok);
}

/* Tokenizes --data and --eval-data; without --eval-data the last 5% of --data is held out when
 * it is large enough (required only when --eval-every asks for an eval loss). */
static int corpus_load(run *r, const sl_config *cfg, const char *parts_dir, corpus *c, sl_err *err)
{
    if (!r->n_files && !r->eval_file) return SL_EXIT_OK;
    bool bundled;
    char vocab[PATH_MAX];
    if (!(c->tok = sl_gen_tokenizer(r->vocab, parts_dir, cfg->vocab_size, &bundled, vocab, sizeof vocab, err)))
        return SL_EXIT_USAGE;
    if (bundled) fprintf(stderr, "%s: %s has no vocab: using the bundled GPT-2 vocab (%s)\n", prog, parts_dir, vocab);
    if (r->n_files && !(c->data = sl_data_new(c->tok, r->files, r->n_files, r->opts.seq_len, cfg->eos_token_id, err)))
        return SL_EXIT_FAILURE;
    if (r->eval_file && !(c->eval = sl_data_new(c->tok, &r->eval_file, 1, r->opts.seq_len, cfg->eos_token_id, err)))
        return SL_EXIT_FAILURE;
    if (c->data && !c->eval) {
        sl_err why;
        if (!(c->eval = sl_data_hold_out(c->data, 0.05, &why))) {
            if (r->eval_every) return sl_fail(err, "--eval-every without --eval-data: %s", why.msg), SL_EXIT_USAGE;
            printf("data: no held-out eval loss (%s)\n", why.msg);
        }
    }
    return SL_EXIT_OK;
}

/* The run's length in steps: --steps, or --epochs over the data (one step an epoch with --ids). */
static long total_steps(const run *r, const sl_data *data)
{
    if (!r->epochs) return r->steps ? r->steps : 100;
    if (!data) return r->epochs;
    long total = r->epochs * sl_data_sequences(data) / ((long)r->opts.batch * r->opts.grad_accum);
    return total < 1 ? 1 : total;
}

/* ---- where saves go, checked before step 1 ---- */

/* Whether path lies below root (or is root), compared as a trunk compares them (lib/trunk.c). */
static bool lies_below(const char *path, const char *root)
{
    size_t len = strlen(root);
    while (len > 1 && root[len - 1] == '/')
        len--;
    return !strncmp(path, root, len) && (path[len] == '/' || path[len] == '\0' || len == 1);
}

/* The rule every trunk applies to the directory of a save or a resume (option names it): below
 * checkpoint_root (a relative one is taken there), no '..'. */
static int check_trunk_rule(const sl_topology *topo, const char *option, const char *dir, sl_err *err)
{
    for (const char *p = dir; p; p = strchr(p, '/') ? strchr(p, '/') + 1 : NULL)
        if (p[0] == '.' && p[1] == '.' && (p[2] == '/' || p[2] == '\0'))
            return sl_fail(err, "%s %s: the trunks refuse a directory with '..' in it; name it without", option, dir);
    const char *root = topo->checkpoint_root;
    if (dir[0] == '/' && root[0] == '/' && !lies_below(dir, root))
        return sl_fail(err,
                       "%s %s is outside %s, below which the trunks keep their checkpoints (checkpoint_root of "
                       "%s): set checkpoint_root = %s in [pipeline], or use a path below %s (a relative one is "
                       "taken there)",
                       option, dir, root, topo->path, dir, root);
    return 0;
}

/* The directory a trunk keeps dir's checkpoint in on its host, as it resolves it; "" when this
 * process cannot tell (checkpoint_root unset or relative: below the node's working directory). */
static void trunk_dir(const sl_topology *topo, const char *dir, char *out, size_t size)
{
    char root[PATH_MAX];
    if (dir[0] == '/') {
        snprintf(out, size, "%s", dir);
    } else if (topo->checkpoint_root[0] != '/') {
        out[0] = '\0';
    } else {
        if (!realpath(topo->checkpoint_root, root)) snprintf(root, sizeof root, "%s", topo->checkpoint_root);
        if (snprintf(out, size, "%s/%s", root, dir) >= (int)size) out[0] = '\0';
    }
}

static const sl_part_info *part_of(const sl_topo_node *node, const sl_part_info *parts, int n_parts)
{
    for (int i = 0; i < n_parts; i++)
        if (parts[i].first == node->first && parts[i].last == node->last) return &parts[i];
    return &parts[0];
}

/* Asks every trunk whether it can save this run's checkpoints in --save-dir (a dry run on its
 * host) and prints where each one will; places[k] gets trunk k + 1's. Returns an exit status: a
 * refusal is the user's to fix. */
static int check_trunk_saves(const run *r, sl_trainer *tr, sl_trainer_place *places, sl_err *err)
{
    int n = sl_trainer_check_save(tr, r->save_dir, places, err);
    if (n < 0)
        return sl_trainer_timed_out(tr) ? SL_EXIT_TIMEOUT : sl_trainer_lost(tr) ? SL_EXIT_FAILURE : SL_EXIT_USAGE;
    for (int k = 0; k < n; k++)
        printf("trunk %s will save to %s:%s\n", places[k].node, places[k].host, places[k].dir);
    return SL_EXIT_OK;
}

/* Where each trunk writes its part (places: as the trunks said): printed, and kept in
 * SAVE_DIR/trunks.json, where zmq-splitlearn-merge looks when a trunk's part is missing. */
static int announce_trunks(const run *r, const sl_topology *topo, const sl_part_info *parts, int n_parts,
                           const sl_trainer_place *places, sl_err *err)
{
    cJSON *where = cJSON_CreateObject();
    for (int i = 1; i + 1 < topo->n_nodes; i++) {
        const sl_topo_node *node = &topo->nodes[i];
        char file[PATH_MAX + 64] = "";
        sl_part_checkpoint_file(places[i - 1].dir, part_of(node, parts, n_parts)->role, node->name, file, sizeof file,
                                NULL);
        printf("checkpoints of %s: on %s, %s\n", node->name, node->host, file);
        cJSON *entry = cJSON_AddObjectToObject(where, node->name);
        cJSON_AddStringToObject(entry, "host", node->host);
        cJSON_AddStringToObject(entry, "file", file);
    }
    char path[PATH_MAX + 16], *text = cJSON_Print(where);
    snprintf(path, sizeof path, "%s/trunks.json", r->save_dir);
    int rc = text ? sl_write_text_file(path, text, err) : sl_fail(err, "out of memory");
    free(text);
    cJSON_Delete(where);
    return rc;
}

/* Every place a save of this run writes to, checked before step 1 (a save that fails after
 * hours of training loses them): --save-dir here for the stages this process runs, and each
 * trunk's directory on its host (the trunks' rule; the directory itself when the host is this
 * one and checkpoint_root is absolute). Room for three saves (the previous, the current and the
 * next) in a new directory, one more when resuming there. Returns an exit status. */
static int preflight(const run *r, const sl_topology *topo, const sl_part_info *parts, int n_parts, bool remote,
                     sl_err *err)
{
    if (!r->save_dir) {
        printf("warning: no --save-dir: nothing of this run will be kept (--save-dir DIR keeps checkpoints)\n");
        return SL_EXIT_OK;
    }
    const bool resumed_there = r->resume && sl_same_dir(r->resume, r->save_dir);
    unsigned long long here = 0;
    for (int i = 0; i < n_parts; i++)
        here += !remote || parts[i].role != SL_ROLE_TRUNK ? sl_checkpoint_room(parts[i].parameters, resumed_there) : 0;
    if (sl_check_output(r->save_dir, true, err) != 0 || sl_check_space(r->save_dir, here, err) != 0) {
        sl_err_prefix(err, "--save-dir %s cannot take this run's checkpoints", r->save_dir);
        return SL_EXIT_USAGE;
    }
    if (!remote) return SL_EXIT_OK;
    if (check_trunk_rule(topo, "--save-dir", r->save_dir, err) != 0 ||
        (r->resume && check_trunk_rule(topo, "--resume", r->resume, err) != 0))
        return SL_EXIT_USAGE;
    for (int i = 1; i + 1 < topo->n_nodes; i++) {
        const sl_topo_node *node = &topo->nodes[i];
        char dir[PATH_MAX];
        trunk_dir(topo, r->save_dir, dir, sizeof dir);
        if (!dir[0] || !sl_topology_host_is_local(node->host)) continue; /* the node checks it at the first save */
        if (sl_check_output(dir, true, err) != 0 ||
            sl_check_space(dir, sl_checkpoint_room(part_of(node, parts, n_parts)->parameters, resumed_there), err) !=
                0) {
            sl_err_prefix(err,
                          "%s (on this host) cannot save its part in %s; set checkpoint_root in [pipeline] of %s "
                          "to a directory it can write",
                          node->name, dir, topo->path);
            return SL_EXIT_USAGE;
        }
    }
    return SL_EXIT_OK;
}

/* A trunk's connection dropped: waits for it to come back (the launcher's restart = yes, or by
 * hand) for up to wait seconds, then makes the trainer again from the last checkpoint, which every
 * stage reloads; the step's log rows after it are dropped. Returns 0 with *tr the new trainer. */
static int recover(const sl_topology *topo, const char *ckpt, long ckpt_step, double wait, sl_trainer_opts *opts,
                   sl_trainer **tr, FILE **log, const char *log_path, sl_err *err)
{
    fprintf(stderr, "%s: %s\nwaiting up to %g s for %s to come back, to go on from %s (step %ld)\n", prog, err->msg,
            wait, sl_trainer_lost(*tr), ckpt, ckpt_step);
    sl_trainer_destroy(tr);
    sl_topology patient = *topo;
    if (patient.timeout > wait) patient.timeout = wait > 1 ? wait : 1;
    for (double end = sl_now() + wait; !*tr && !stop_requested && sl_now() < end;)
        if (!(*tr = sl_trainer_new_remote(&patient, ckpt, opts, err))) usleep(500000);
    if (!*tr) return sl_fail(err, "the trunks did not come back within %g s: %s", wait, err->msg);
    if (*log) fclose(*log);
    *log = log_path ? log_open(log_path, ckpt_step, NULL, err) : NULL;
    if (log_path && !*log) return -1;
    printf("recovered: every stage reloaded %s, going on from step %ld\n", ckpt, ckpt_step);
    return 0;
}

/* The trainer's refusals (its own, and its ZAP handler's from that thread): one write a line. */
static void log_refusal(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "%s: %s\n", prog, line);
}

/* Trains from the topology's split (or r->resume) to the end, or to a stop signal. Returns an
 * exit status. */
static int train(run *r, sl_err *err)
{
    sl_topology topo;
    sl_part_info infos[SL_MAX_SPLITS + 1];
    if (sl_topology_load(r->topology, &topo, true, err) != 0) return SL_EXIT_USAGE;
    int n_parts = sl_split_read_index(topo.parts, infos, SL_MAX_SPLITS + 1, err);
    if (n_parts < 0) return SL_EXIT_FAILURE;
    if (check_against_model(r, &infos[0].cfg, &topo, err) != 0 || check_save_dir(r, err) != 0) return SL_EXIT_USAGE;
    bool remote = topo.n_nodes > 2 && !r->local;
    int status = preflight(r, &topo, infos, n_parts, remote, err);
    if (status != SL_EXIT_OK) return status;
    r->opts.privacy.activations = sl_topology_bottom_defence(&topo); /* what leaves this process */
    r->opts.privacy.gradients = sl_topology_top_defence(&topo);
    corpus c = {0};
    status = corpus_load(r, &infos[0].cfg, topo.parts, &c, err);
    int rc = status == SL_EXIT_OK ? 0 : -1;
    const long total = total_steps(r, c.data);
    long eval_every = r->eval_every ? r->eval_every : c.eval ? 100 : 0;
    r->opts.total_steps = total;
    r->opts.log = log_refusal;
    sl_trainer *tr = NULL;
    if (rc == 0)
        tr = remote ? sl_trainer_new_remote(&topo, r->resume, &r->opts, err)
                    : sl_trainer_new(r->resume ? r->resume : topo.parts, &r->opts, err);
    if (!tr) rc = -1;
    if (rc == 0 && r->resume) printf("resumed %s at step %ld\n", r->resume, sl_trainer_step_count(tr));
    sl_trainer_place places[SL_MAX_SPLITS + 1];
    if (rc == 0 && r->save_dir && remote && (status = check_trunk_saves(r, tr, places, err)) != SL_EXIT_OK) rc = -1;
    const size_t tokens_per_step = (size_t)r->opts.grad_accum * r->opts.batch * r->opts.seq_len;
    int32_t *ids = malloc(tokens_per_step * sizeof *ids), *targets = malloc(tokens_per_step * sizeof *targets);
    if (rc == 0 && (!ids || !targets)) rc = sl_fail(err, "out of memory for a step of %zu tokens", tokens_per_step);
    char log_default[PATH_MAX];
    if (r->save_dir) log_in(r->save_dir, log_default, sizeof log_default);
    const char *log_path = r->log_path ? r->log_path : r->save_dir ? log_default : NULL;
    if (rc == 0 && r->save_dir) rc = sl_mkdirs(r->save_dir, err);
    if (rc == 0 && r->save_dir && remote) rc = announce_trunks(r, &topo, infos, n_parts, places, err);
    FILE *log = NULL;
    if (rc == 0 && log_path && !(log = log_open(log_path, sl_trainer_step_count(tr), r->resume, err))) rc = -1;
    if (rc == 0 && c.data)
        printf("data: %ld tokens, %d %s of %d; %d stages; %zu tokens per step\n", sl_data_tokens(c.data),
               sl_data_sequences(c.data), sl_plural(sl_data_sequences(c.data), "sequence", "sequences"),
               r->opts.seq_len, sl_trainer_stages(tr), tokens_per_step);
    progress pr = {.tty = isatty(STDOUT_FILENO),
                   .start = sl_now(),
                   .first = tr ? sl_trainer_step_count(tr) : 0,
                   .total = total,
                   .eval = NAN,
                   .dcor = NAN};
    float loss = NAN;
    const char *ckpt = r->resume; /* the last checkpoint, at step ckpt_step */
    long ckpt_step = pr.first;
    int recoveries = 0;
    while (rc == 0 && !stop_requested && sl_trainer_step_count(tr) < total) {
        long step = sl_trainer_step_count(tr);
        float lr = sl_trainer_lr(tr);
        step_batch(r, c.data, step, ids, targets);
        double t0 = sl_now(), secs = 0;
        float eval_loss = NAN;
        if ((rc = sl_trainer_step(tr, ids, targets, &loss, err)) == 0) secs = sl_now() - t0;
        if (rc == 0 && c.eval && eval_every && ((step + 1) % eval_every == 0 || step + 1 == total))
            rc = evaluate(r, tr, c.eval, ids, targets, &eval_loss, err);
        if (rc == 0) {
            double tps = (double)tokens_per_step / secs;
            pr.dcor = sl_trainer_dcor(tr);
            progress_step(&pr, step + 1, loss, eval_loss, lr, tps);
            if (log) log_step(log, step + 1, loss, eval_loss, lr, tps, sl_now() - pr.start);
        }
        if (rc == 0 && r->save_dir && r->save_every && (step + 1) % r->save_every == 0 &&
            (rc = sl_trainer_save(tr, r->save_dir, loss, err)) == 0) {
            ckpt = r->save_dir;
            ckpt_step = step + 1;
            progress_erase(&pr);
            printf("checkpoint: %s (step %ld)\n", ckpt, ckpt_step);
        }
        if (rc != 0 && remote && ckpt && r->recover_wait > 0 && tr && sl_trainer_lost(tr) && recoveries++ < 10)
            rc = recover(&topo, ckpt, ckpt_step, r->recover_wait, &r->opts, &tr, &log, log_path, err);
        if (rc != 0) name_last_checkpoint(ckpt, ckpt_step, err);
    }
    progress_end(&pr);
    if (stop_requested && tr) fprintf(stderr, "%s: stopping at step %ld\n", prog, sl_trainer_step_count(tr));
    if (rc == 0 && r->save_dir) {
        bool saved = ckpt == r->save_dir && ckpt_step == sl_trainer_step_count(tr); /* announced already */
        rc = sl_trainer_save(tr, r->save_dir, loss, err);
        if (rc == 0 && !saved) printf("checkpoint: %s (step %ld)\n", r->save_dir, sl_trainer_step_count(tr));
    }
    if (log) fclose(log);
    if (rc == 0 && log_path && r->save_dir) {
        char png[PATH_MAX + 16], title[PATH_MAX + 128];
        snprintf(png, sizeof png, "%s/loss.png", r->save_dir);
        plot_title(r, title, sizeof title);
        plot(log_path, png, title, sl_trainer_step_count(tr));
    }
    free(ids);
    free(targets);
    corpus_free(&c);
    bool timed_out = tr && sl_trainer_timed_out(tr);
    sl_trainer_destroy(&tr);
    if (rc == 0 && stop_requested == SIGINT) return SL_EXIT_INTERRUPTED;
    if (rc != 0 && timed_out) return SL_EXIT_TIMEOUT; /* a stage did not answer */
    return rc == 0 ? SL_EXIT_OK : status != SL_EXIT_OK ? status : SL_EXIT_FAILURE;
}

int main(int argc, char **argv)
{
    run r = {.opts = {.batch = 4,
                      .seq_len = 0 /* 64, or n_positions when less */,
                      .grad_accum = 1,
                      .adamw = SL_ADAMW_DEFAULT},
             .seed = 1,
             .save_every = 100,
             .recover_wait = 60};
    sl_err err;
    if (parse(&r, argc, argv, &err) != 0) return sl_tool_usage_error(prog, err.msg);
    zsys_handler_set(NULL); /* czmq's handler would take SIGINT and SIGTERM from us: they save a checkpoint */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int status = sl_threads_setup((int)r.threads, r.pin, &err) != 0 ? SL_EXIT_FAILURE : train(&r, &err);
    if (status != SL_EXIT_OK && status != SL_EXIT_INTERRUPTED) fprintf(stderr, "%s: %s\n", prog, err.msg);
    return status;
}
