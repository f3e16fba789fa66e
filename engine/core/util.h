/* util.h - small internal helpers shared by engine modules (eng_fail and
 * eng_read_file are public: nlpd_engine.h). */
#ifndef NLPD_UTIL_H
#define NLPD_UTIL_H

#include <stddef.h>

#include "nlpd_engine.h"

/* Join dir and name into buf; ENG_EINVAL if it does not fit. */
int eng_path_join(char *buf, size_t cap, const char *dir, const char *name);

/* Read dir/name as a JSON object (free with cJSON_Delete). On failure NULL with *rc
 * ENG_EINVAL (path too long), ENG_EIO or ENG_EFORMAT (not a JSON object). With
 * optional set, a missing file gives NULL with *rc ENG_OK. */
struct cJSON *eng_read_json(const char *dir, const char *name, int optional, int *rc,
                            eng_error *err);

/* Test seam in checkpoint.c: the renameat2 eng_ckpt_commit calls. */
extern int (*eng_ckpt_renameat2)(int olddirfd, const char *oldpath, int newdirfd,
                                 const char *newpath, unsigned int flags);

#endif
