/* feedback_log.h - durable, group-committed appends to the feedback logs
 * (DESIGN §4 "Feedback"; the trainer reads them).
 *
 * Layout: DIR/<model>/<instance>.jsonl, one file per model per daemon
 * instance (instance = <hostname>-<pid>-<start unix s>), so replicas can
 * share DIR. One writer thread per log: callers queue entries (whole lines,
 * each ending in '\n'); the writer takes everything queued, appends it per
 * model, calls fdatasync once per model file touched, then completes every
 * entry of the round. An entry completed with err == 0 is on disk.
 *
 * Failures: an entry whose write fails (ENOSPC, EFBIG, EIO, ...) is cut off
 * again (ftruncate to the offset before it) and completed with the errno, as
 * is every later entry of the round for that file; a failed fdatasync fails
 * the whole round for that file (and cuts it off). Nothing is acknowledged
 * that is not synced, and only a process death mid-write can leave a torn
 * line, which is then the file's last line (a new process writes a new file).
 * Should a cut-off itself fail, the writer moves on to a new file
 * <instance>.<k>.jsonl, so a torn line is still the last line of its file.
 */
#ifndef NLPD_SRV_FEEDBACK_LOG_H
#define NLPD_SRV_FEEDBACK_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

typedef struct srv_fblog srv_fblog;

typedef struct srv_fblog_entry {
    int model;                /* index into the log's model names */
    const char *data;         /* whole lines, each ending in '\n' */
    size_t len;
    int err;                  /* set before done: 0 (synced) or an errno */
    /* Writer thread: the entry is finished; the writer does not touch it
     * afterwards. */
    void (*done)(struct srv_fblog_entry *e, void *arg);
    void *arg;
    struct srv_fblog_entry *next; /* private */
} srv_fblog_entry;

/* A log under dir for n models named names[i] (copied; they must be safe
 * file names), instance as above, and start its writer; metrics (may be NULL)
 * counts its fdatasync calls. dir is created (mkdir -p) when possible; a
 * folder that cannot be written is not an error here (entries then fail with
 * the errno). NULL with err set. */
srv_fblog *srv_fblog_new(const char *dir, const char *instance, int n, const char *const *names,
                         srv_metrics *metrics, char *err, size_t cap);

/* Queue e (any thread). 0, or -1 once the log is stopping (e not queued). */
int srv_fblog_submit(srv_fblog *l, srv_fblog_entry *e);

/* Write and complete everything queued, then stop the writer. Idempotent. */
void srv_fblog_stop(srv_fblog *l);
void srv_fblog_free(srv_fblog *l); /* stops first; NULL is fine */

/* fdatasync calls made, and rounds (groups of entries written together). */
uint64_t srv_fblog_fsyncs(srv_fblog *l);

/* The file model i is written to now, into path[cap]. */
void srv_fblog_path(srv_fblog *l, int model, char *path, size_t cap);

#endif
