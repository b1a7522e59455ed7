/* train_report.h — what zmq-splitlearn-train shows and keeps of a run besides its checkpoints: the
 * status line redrawn on a terminal, the CSV log (continued exactly by a resume) and the loss plot
 * (gnuplot, run without a shell). Included by tools/train.c only: the program's reporting, kept
 * beside it so that train.c holds the command line and the loop. */
#ifndef SL_TRAIN_REPORT_H
#define SL_TRAIN_REPORT_H

#include "clock.h"
#include "err.h"
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* s as a gnuplot string: single quotes, in which nothing is special but a quote, doubled. */
static void gnuplot_string(FILE *fp, const char *s)
{
    fputc('\'', fp);
    for (; *s; s++)
        fputs(*s == '\'' ? "\'\'" : (char[]){*s, '\0'}, fp);
    fputc('\'', fp);
}

/* A step between x tics that gives at most about 10 of them over steps: 1, 2, 5, 10, 20, ... */
static long tic_step(long steps)
{
    long step = 1;
    for (int k = 0; steps / step > 10; k++)
        step *= k % 3 == 1 ? 5 : 2;
    return step;
}

/* loss.png beside the log, when gnuplot is installed: run without a shell (the script goes to its
 * standard input), so that any path works. title names the run; steps is the last step. */
static void plot(const char *log_path, const char *png, const char *title, long steps)
{
    int fds[2];
    if (pipe(fds) != 0) return;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(fds[0], STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        close(fds[1]);
        execlp("gnuplot", "gnuplot", (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    FILE *fp = pid > 0 ? fdopen(fds[1], "w") : NULL;
    if (!fp) {
        close(fds[1]);
        return;
    }
    fputs("set terminal png size 900,500\nset output ", fp);
    gnuplot_string(fp, png);
    fputs("\nset title ", fp);
    gnuplot_string(fp, title);
    fprintf(fp,
            " noenhanced\nset datafile separator ','\nset key autotitle columnhead\nset xlabel 'step'\n"
            "set ylabel 'loss'\nset grid\nset xtics %ld\nset format x '%%.0f'\nset autoscale xfix\n"
            "set offsets graph 0.03, graph 0.03, graph 0.05, graph 0.05\nplot ",
            tic_step(steps));
    gnuplot_string(fp, log_path);
    fputs(" using 1:2 with lines title 'train', '' using 1:(strcol(3) eq '' ? NaN : $3) with linespoints pt 7 "
          "title 'eval'\n",
          fp);
    fclose(fp);
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        fprintf(stderr, "%s: gnuplot not found: no plot (apt-get install gnuplot-nox)\n", "zmq-splitlearn-train");
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        printf("plot: %s\n", png);
    else
        fprintf(stderr, "%s: gnuplot failed: no plot\n", "zmq-splitlearn-train");
}

/* What a person watching sees: every step's "step K loss X" line (the contract for scripts and
 * logs) and, on a terminal, a status line under them redrawn in place. */
typedef struct progress {
    bool tty, drawn;
    double start;
    long first, total;
    float eval;  /* the last eval loss, NAN before the first */
    double dcor; /* NoPeek's distance correlation of the step, NAN without NoPeek */
} progress;

static void progress_erase(progress *p)
{
    if (p->drawn) fputs("\r\033[K", stdout);
    p->drawn = false;
}

static void progress_step(progress *p, long step, float loss, float eval_loss, float lr, double tokens_per_s)
{
    progress_erase(p);
    printf("step %ld loss %.6f", step, (double)loss);
    if (!isnan(eval_loss)) printf(" eval %.4f", (double)eval_loss), p->eval = eval_loss;
    if (!isnan(p->dcor)) printf(" dcor %.4f", p->dcor);
    putchar('\n');
    if (p->tty) {
        long eta = (long)((sl_now() - p->start) / (double)(step - p->first) * (double)(p->total - step) + 0.5);
        printf("step %ld/%ld (%.0f%%)  loss %.4f", step, p->total, 100.0 * (double)step / (double)p->total,
               (double)loss);
        if (p->eval == p->eval) printf("  eval %.4f", (double)p->eval);
        printf("  lr %.2e  %.0f tok/s  ETA %ld:%02ld:%02ld", (double)lr, tokens_per_s, eta / 3600, eta / 60 % 60,
               eta % 60);
        p->drawn = true;
    }
    fflush(stdout);
}

static void progress_end(progress *p)
{
    progress_erase(p);
    fflush(stdout);
}

static const char log_header[] = "step,loss,eval_loss,lr,tokens_per_s,seconds\n";

/* The CSV log a checkpoint directory keeps. */
static void log_in(const char *dir, char *out, size_t size) { snprintf(out, size, "%s/train_log.csv", dir); }

/* The CSV log, continued at step `from`: the rows up to it come from the log there or, for a new
 * file, from the log in the checkpoint resumed (resume_dir); later rows (written after that
 * checkpoint) are dropped. The kept rows replace the file atomically; a log that exists but
 * cannot be read is an error, not a reason to start it again. Caller closes the result. */
static FILE *log_open(const char *path, long from, const char *resume_dir, sl_err *err)
{
    char before[PATH_MAX + 16];
    log_in(resume_dir ? resume_dir : ".", before, sizeof before);
    const char *source = resume_dir && access(path, F_OK) != 0 ? before : path;
    char *old = NULL;
    if (from > 0 && access(source, F_OK) == 0 && !(old = sl_read_text_file(source, (size_t)1 << 30, err))) return NULL;
    char *kept = malloc((old ? strlen(old) : 0) + sizeof log_header + 1), *end = kept;
    if (!kept) {
        free(old);
        sl_fail(err, "out of memory");
        return NULL;
    }
    end += sprintf(end, "%s", log_header);
    for (char *line = old ? strtok(old, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        char *after;
        long step = strtol(line, &after, 10);
        if (after != line && *after == ',' && step <= from) end += sprintf(end, "%s\n", line);
    }
    int rc = sl_write_text_file(path, kept, err);
    FILE *log = rc == 0 ? fopen(path, "a") : NULL;
    if (rc == 0 && !log) sl_fail(err, "%s: cannot append: %s", path, strerror(errno));
    free(kept);
    free(old);
    return log;
}

static void log_step(FILE *log, long step, float loss, float eval_loss, float lr, double tps, double seconds)
{
    fprintf(log, "%ld,%.6f,", step, (double)loss);
    if (!isnan(eval_loss)) fprintf(log, "%.6f", (double)eval_loss);
    fprintf(log, ",%.3e,%.1f,%.3f\n", (double)lr, tps, seconds);
    fflush(log);
}

#endif
