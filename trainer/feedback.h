/* feedback.h - the feedback logs that the daemon's POST /v1/feedback appends to
 * (DESIGN §4 "Feedback"): <feedback.dir>/<model>/<instance>.jsonl, one JSON object
 * per line, {"time": <unix ms>, "model": "...", "version": "...", "text": "...",
 * "label": "..."} plus optional "request_id". A line without its newline (a write cut
 * short by a crash) or one that does not parse is skipped, counted and reported as
 * FILE:LINE, never an error. */
#ifndef NLPD_TRN_FEEDBACK_H
#define NLPD_TRN_FEEDBACK_H

#include <stdint.h>
#include <stdio.h>

#include "nlpd_engine.h"

typedef struct trn_fb_item {
    char *text;
    char *label;
    int64_t time; /* unix ms */
    long seq;     /* read order (ties on time: the later one is newer) */
} trn_fb_item;

typedef struct trn_feedback {
    trn_fb_item *it;
    int n, cap;
    int files;        /* logs read */
    int torn;         /* last lines without a newline: skipped */
    int bad;          /* lines that do not parse or lack time/text/label: skipped */
    int older;        /* items at or before the `after` time: not taken */
    int unchanged;    /* logs not read: unchanged since a read found nothing newer (cache) */
    int duplicates;   /* items replaced by a newer one with the same text */
    int64_t max_time; /* newest time among the items taken (0: none) */
} trn_feedback;

/* What repeated reads (nlpd-train watch, every interval) know about each log: its
 * identity (device, inode, size, mtime) and the newest time in it. A log that is
 * unchanged and holds nothing newer than the time asked for is not read again, so a
 * check costs the logs that changed (the daemon's current ones), not all feedback
 * ever given. Zero it first; trn_fb_cache_free. */
typedef struct trn_fb_seen {
    uint64_t dev, ino, size;
    int64_t mtime_ns;
    int64_t newest; /* newest item time in the log (0: none) */
    unsigned pass;  /* the read that last saw it (entries of vanished logs are dropped) */
} trn_fb_seen;

typedef struct trn_fb_cache {
    trn_fb_seen *e;
    int n, cap;
    unsigned pass;
} trn_fb_cache;

void trn_fb_cache_free(trn_fb_cache *c);

/* Reads feedback logs: each path is a .jsonl log or a folder whose *.jsonl files
 * are read (in name order). Only items with time > after_ms are taken. Skipped
 * lines are reported to log (NULL: silent). cache (NULL: none) skips logs it
 * knows hold nothing newer than after_ms. 0, or ENG_EIO when a path cannot be
 * read, ENG_ENOMEM. fb accumulates over calls; zero it first. */
int trn_feedback_read(const char *const *paths, int n, int64_t after_ms, trn_fb_cache *cache,
                      FILE *log, trn_feedback *fb, eng_error *err);

/* Keeps one item per text: the newest (time, then read order). Items end up sorted
 * by text. */
void trn_feedback_dedupe(trn_feedback *fb);

/* Index of the item with this text after trn_feedback_dedupe, or -1. */
int trn_feedback_find(const trn_feedback *fb, const char *text);

void trn_feedback_free(trn_feedback *fb);

#endif
