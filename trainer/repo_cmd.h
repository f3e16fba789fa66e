/* repo_cmd.h - nlpd-train's model-repository subcommands (nlpd_repo.h):
 *   nlpd-train publish SRC_DIR --repository DIR [--key PRIVATE.pem] [--metadata FILE]
 *   nlpd-train verify VERSION_DIR [--public-key KEY.pub]
 *   nlpd-train pin --repository DIR [VERSION | --unpin]
 *   nlpd-train prune --repository DIR --keep N [--public-key KEY.pub]
 * Each takes argv with argv[0] the subcommand's name and returns the exit status:
 * 0 done, 1 failed (reason on stderr), 2 bad usage. */
#ifndef TRN_REPO_CMD_H
#define TRN_REPO_CMD_H

#include <stddef.h>

/* The subcommand's function for argv[1], or NULL when argv[1] is none. */
typedef int (*trn_cmd_fn)(int argc, char **argv);
trn_cmd_fn trn_repo_cmd(int argc, char **argv);

int trn_cmd_publish(int argc, char **argv);
int trn_cmd_verify(int argc, char **argv);
int trn_cmd_pin(int argc, char **argv);
int trn_cmd_prune(int argc, char **argv);

/* eng_repo_prune with the removed names as "v000001,v000002" in removed[cap]
 * (truncated with "..." when long); 0 or a negative ENG_E* code. */
struct eng_error;
int trn_prune(const char *repo, int keep, const char *public_key, char *removed, size_t cap,
              struct eng_error *err);

#endif
