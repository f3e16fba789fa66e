/* repo_cmd.c - `nlpd-train publish|verify|pin|prune`: thin command lines over the engine's
 * model repository (nlpd_repo.h); the daemon uses the same code. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nlpd_repo.h"
#include "repo_cmd.h"

#define META_MAX (1 << 20)

static const char publish_usage[] =
    "usage: nlpd-train publish SRC_DIR --repository DIR [--key PRIVATE.pem] [--metadata FILE]\n"
    "                          [--keep N [--public-key KEY.pub]]\n"
    "\n"
    "Copies the Hugging Face folder SRC_DIR into repository DIR (created if missing) as a new\n"
    "version v000001, v000002, ... atomically, with nlpd-version.json (FILE's JSON object plus\n"
    "published_at and source) and model.sig (OpenSSF model-signing bundle, signed with the\n"
    "ECDSA P-256 key, or digest-only without --key). Prints the version name.\n"
    "--keep N then prunes DIR to N valid versions as `nlpd-train prune` does (default: keep\n"
    "every version).\n";

static const char verify_usage[] =
    "usage: nlpd-train verify VERSION_DIR [--public-key KEY.pub]\n"
    "\n"
    "Checks VERSION_DIR against its model.sig: every file's SHA-256, no file missing or extra,\n"
    "and with --public-key the ECDSA P-256 signature (unsigned versions are refused).\n";

static const char pin_usage[] =
    "usage: nlpd-train pin --repository DIR [VERSION | --unpin]\n"
    "\n"
    "Pins VERSION (a rollback: followers serve it instead of the newest), removes the pin\n"
    "(--unpin), or prints the pinned version (none: prints nothing).\n";

static const char prune_usage[] =
    "usage: nlpd-train prune --repository DIR --keep N [--public-key KEY.pub]\n"
    "\n"
    "Retention: removes old versions of DIR so that at most N (>= 1) valid versions remain\n"
    "(valid: complete and verifying, with --public-key signed by that key). Never removed:\n"
    "the pinned version, the version a daemon serves (the pinned one, else the newest\n"
    "valid one), the newest version folder (names are never reused), versions newer than\n"
    "the served one that do not verify, and anything not named v + 6 digits (.tmp-*\n"
    "publishes in progress, other files). Invalid versions older than the served one go.\n"
    "Each version is first renamed to a hidden DIR/.pruned-* (followers never see half a\n"
    "folder), then deleted; leftovers of an interrupted prune are deleted by the next one.\n"
    "Prints each removed version on stdout and a summary on stderr.\n"
    "Exit status: 0 done, 1 failed (nothing removed unless listed), 2 bad usage.\n";

enum { O_REPO = 256, O_KEY, O_META, O_PUBKEY, O_UNPIN, O_KEEP };

/* --keep N: a whole number in [lo, 1000000]; -1 when not. */
static int parse_keep(const char *s, int lo)
{
    char *end;
    long v = strtol(s, &end, 10);
    return *s && !*end && v >= lo && v <= 1000000 ? (int)v : -1;
}

int trn_prune(const char *repo, int keep, const char *public_key, char *removed, size_t cap,
              eng_error *err)
{
    eng_repo_prune_report rep;
    int rc = eng_repo_prune(repo, keep, public_key, &rep, err);
    if (cap)
        removed[0] = 0;
    size_t len = 0;
    for (int i = 0; i < rep.n_removed && cap; i++) {
        const char *name = rep.removed[i].name;
        size_t need = strlen(name) + (i ? 1 : 0);
        if (len + need + 4 > cap) {
            snprintf(removed + len, cap - len, "%s...", i ? "," : "");
            break;
        }
        len += (size_t)snprintf(removed + len, cap - len, "%s%s", i ? "," : "", name);
    }
    eng_repo_prune_report_free(&rep);
    return rc;
}

static int bad_usage(const char *cmd, const char *msg)
{
    fprintf(stderr, "nlpd-train %s: %s (see nlpd-train %s --help)\n", cmd, msg, cmd);
    return 2;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(META_MAX + 1);
    size_t n = buf ? fread(buf, 1, META_MAX + 1, f) : 0;
    int bad = !buf || ferror(f) || n > META_MAX;
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

int trn_cmd_publish(int argc, char **argv)
{
    static const struct option opts[] = {
        {"repository", required_argument, 0, O_REPO},
        {"key", required_argument, 0, O_KEY},
        {"metadata", required_argument, 0, O_META},
        {"keep", required_argument, 0, O_KEEP},
        {"public-key", required_argument, 0, O_PUBKEY},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *repo = NULL, *key = NULL, *meta_path = NULL, *pubkey = NULL;
    int c, keep = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_REPO: repo = optarg; break;
        case O_KEY: key = optarg; break;
        case O_META: meta_path = optarg; break;
        case O_PUBKEY: pubkey = optarg; break;
        case O_KEEP:
            if ((keep = parse_keep(optarg, 1)) < 0)
                return bad_usage("publish", "--keep takes a whole number >= 1");
            break;
        case 'h': fputs(publish_usage, stdout); return 0;
        default: return bad_usage("publish", "unknown option");
        }
    }
    if (optind + 1 != argc)
        return bad_usage("publish", "one SRC_DIR is required");
    if (!repo)
        return bad_usage("publish", "--repository DIR is required");
    char *meta = NULL;
    if (meta_path && !(meta = read_text(meta_path))) {
        fprintf(stderr, "nlpd-train publish: %s: cannot read (or larger than 1 MiB)\n", meta_path);
        return 1;
    }
    char version[ENG_REPO_NAME_MAX + 1];
    eng_error err;
    int rc = eng_repo_publish(argv[optind], repo, key, meta, version, sizeof version, &err);
    free(meta);
    if (rc) {
        fprintf(stderr, "nlpd-train publish: %s\n", err.msg);
        return 1;
    }
    printf("%s\n", version);
    fflush(stdout);
    if (keep) {
        char removed[1024];
        if (trn_prune(repo, keep, pubkey, removed, sizeof removed, &err)) {
            fprintf(stderr, "nlpd-train publish: published %s, but pruning failed: %s%s%s\n",
                    version, err.msg, *removed ? "; removed " : "", removed);
            return 1;
        }
        if (*removed)
            fprintf(stderr, "nlpd-train publish: pruned %s (keeping %d)\n", removed, keep);
    }
    return 0;
}

int trn_cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {
        {"public-key", required_argument, 0, O_PUBKEY},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *key = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_PUBKEY: key = optarg; break;
        case 'h': fputs(verify_usage, stdout); return 0;
        default: return bad_usage("verify", "unknown option");
        }
    }
    if (optind + 1 != argc)
        return bad_usage("verify", "one VERSION_DIR is required");
    eng_error err;
    if (eng_repo_verify(argv[optind], key, &err)) {
        fprintf(stderr, "nlpd-train verify: %s\n", err.msg);
        return 1;
    }
    printf("%s: verified (%s)\n", argv[optind], key ? "signature and digests" : "digests only");
    return 0;
}

int trn_cmd_pin(int argc, char **argv)
{
    static const struct option opts[] = {
        {"repository", required_argument, 0, O_REPO},
        {"unpin", no_argument, 0, O_UNPIN},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *repo = NULL;
    int unpin = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_REPO: repo = optarg; break;
        case O_UNPIN: unpin = 1; break;
        case 'h': fputs(pin_usage, stdout); return 0;
        default: return bad_usage("pin", "unknown option");
        }
    }
    if (!repo)
        return bad_usage("pin", "--repository DIR is required");
    if (optind + (unpin ? 0 : 1) < argc || (unpin && optind < argc))
        return bad_usage("pin", "VERSION or --unpin, not both");
    eng_error err;
    if (optind < argc || unpin) {
        if (eng_repo_pin_set(repo, unpin ? NULL : argv[optind], &err)) {
            fprintf(stderr, "nlpd-train pin: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    char v[ENG_REPO_NAME_MAX + 1];
    int rc = eng_repo_pin_get(repo, v, sizeof v, &err);
    if (rc < 0) {
        fprintf(stderr, "nlpd-train pin: %s\n", err.msg);
        return 1;
    }
    if (rc == 1)
        printf("%s\n", v);
    return 0;
}

int trn_cmd_prune(int argc, char **argv)
{
    static const struct option opts[] = {
        {"repository", required_argument, 0, O_REPO},
        {"keep", required_argument, 0, O_KEEP},
        {"public-key", required_argument, 0, O_PUBKEY},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *repo = NULL, *pubkey = NULL;
    int keep = -1, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_REPO: repo = optarg; break;
        case O_PUBKEY: pubkey = optarg; break;
        case O_KEEP:
            if ((keep = parse_keep(optarg, 1)) < 0)
                return bad_usage("prune", "--keep takes a whole number >= 1");
            break;
        case 'h': fputs(prune_usage, stdout); return 0;
        default: return bad_usage("prune", "unknown option");
        }
    }
    if (optind < argc)
        return bad_usage("prune", "unexpected argument");
    if (!repo || keep < 0)
        return bad_usage("prune", "--repository DIR and --keep N are required");
    eng_repo_prune_report rep;
    eng_error err;
    int rc = eng_repo_prune(repo, keep, pubkey, &rep, &err);
    for (int i = 0; i < rep.n_removed; i++)
        printf("%s\n", rep.removed[i].name);
    fflush(stdout);
    if (rc)
        fprintf(stderr, "nlpd-train prune: %s\n", err.msg);
    else
        fprintf(stderr, "nlpd-train prune: %s: removed %d version%s, %d left, serving %s%s\n",
                repo, rep.n_removed, rep.n_removed == 1 ? "" : "s", rep.n_kept,
                *rep.current ? rep.current : "none",
                rep.leftovers ? " (and deleted leftovers of an interrupted prune)" : "");
    eng_repo_prune_report_free(&rep);
    return rc ? 1 : 0;
}

trn_cmd_fn trn_repo_cmd(int argc, char **argv)
{
    if (argc < 2)
        return NULL;
    if (strcmp(argv[1], "publish") == 0)
        return trn_cmd_publish;
    if (strcmp(argv[1], "verify") == 0)
        return trn_cmd_verify;
    if (strcmp(argv[1], "pin") == 0)
        return trn_cmd_pin;
    if (strcmp(argv[1], "prune") == 0)
        return trn_cmd_prune;
    return NULL;
}
