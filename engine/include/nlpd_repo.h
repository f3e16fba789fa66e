/* nlpd_repo.h - the model repository: versioned, signed Hugging Face folders
 * (DESIGN §4 "Hot swap"). Public API shared by the daemon (which follows a
 * repository and verifies each version before loading it) and nlpd-train (which
 * publishes into one); neither has its own copy of this code.
 *
 * Layout of a repository DIR:
 *   DIR/<version>/            a complete Hugging Face model folder, plus
 *   DIR/<version>/nlpd-version.json   optional metadata (publish time, source,
 *                             base version, gate scores), signed like every file
 *   DIR/<version>/model.sig   the OpenSSF model-signing bundle (Sigstore bundle,
 *                             DSSE envelope, in-toto statement listing the SHA-256
 *                             of every file). A version exists only once this file
 *                             is present; it is written last, atomically.
 *   DIR/PIN                   optional: the pinned version's name and a newline,
 *                             written atomically (temp file + rename)
 *   DIR/.<anything>           ignored (publishers' temporary folders)
 * Version names: [A-Za-z0-9._-]{1,100}, not starting with '.'; they sort in
 * publish order by eng_repo_version_cmp (strverscmp: "v10" after "v9").
 * eng_repo_publish names versions "v000001", "v000002", ... (one more than the
 * greatest number in DIR).
 *
 * Errors follow nlpd_engine.h: 0 or a negative ENG_E* code with err filled.
 *
 * model.sig follows the model-signing tool 1.1.1 (`model_signing sign key`): the
 * statement lists every regular file by '/'-separated relative path, in the tool's
 * order (path component by component), except the top-level ignore paths model.sig,
 * .git, .github, .gitignore and .gitattributes; the key hint is the hex SHA-256 of
 * the public key's SubjectPublicKeyInfo PEM. The tool has no unsigned mode, so a
 * version published without a key carries nlpd's digest-only marker: the same
 * bundle and statement with "dsseEnvelope.signatures": [] and no
 * "verificationMaterial.publicKey". It proves integrity against accidents, not
 * origin; with a public key configured it is refused as unsigned.
 * Implementation: engine/repo/ (README.md there).
 */
#ifndef NLPD_REPO_H
#define NLPD_REPO_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_engine.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ENG_REPO_SIG_FILE "model.sig"
#define ENG_REPO_META_FILE "nlpd-version.json"
#define ENG_REPO_PIN_FILE "PIN"
#define ENG_REPO_NAME_MAX 100

/* One entry of a repository listing. */
typedef struct eng_repo_entry {
    char name[ENG_REPO_NAME_MAX + 1];
    int has_sig;           /* DIR/<name>/model.sig exists (the version is complete) */
    uint64_t fingerprint;  /* changes when any file of the folder changes (names, sizes,
                              mtimes, inodes); lets a caller skip re-verifying */
} eng_repo_entry;

/* 1 when name is a valid version name. */
int eng_repo_name_valid(const char *name);
/* Publish order: <0, 0, >0 like strcmp. */
int eng_repo_version_cmp(const char *a, const char *b);

/* The version folders of dir, oldest first. *out is malloc'd (free it), *n its
 * length; entries that are not directories (symlinks included) or have invalid
 * names are skipped. */
int eng_repo_list(const char *dir, eng_repo_entry **out, int *n, eng_error *err);

/* Verify a version folder against its model.sig: the bundle parses; the
 * in-toto statement lists exactly the folder's files (model.sig and the tool's
 * ignore_paths excepted) with matching SHA-256 digests, and its subject digest
 * matches; with public_key_pem (a path; NULL: digest-only), the DSSE signature
 * is an ECDSA P-256 signature by that key over the DSSE pre-authentication
 * encoding and the bundle's key hint matches, else the version is refused as
 * unsigned / wrongly signed. Never crashes on malformed bundles. err names the
 * reason (the file whose digest differs, ...). Symlinks and special files in
 * the folder are refused; model.sig is read up to 16 MiB. Refusals return
 * ENG_EFORMAT; ENG_EIO when model.sig is absent or a file cannot be read;
 * ENG_EUNSUPPORTED for a key that is not ECDSA P-256. */
int eng_repo_verify(const char *version_dir, const char *public_key_pem, eng_error *err);

/* Write version_dir/model.sig for the folder's current files (temp file,
 * fsync, rename). private_key_pem: an ECDSA P-256 key in PEM (a path); NULL
 * writes the digest-only bundle (no signature; documented marker). */
int eng_repo_sign(const char *version_dir, const char *private_key_pem, eng_error *err);

/* Publish a Hugging Face folder as a new version of repository dir (created
 * if missing): copy src's regular files (subfolders too) into a temporary
 * folder dir/.tmp-*, write metadata_json (NULL: a minimal one with the
 * publish time and source) as nlpd-version.json, fsync, sign with
 * private_key_pem (NULL: digest-only), then rename it into place under the
 * next version name and fsync dir. Either the whole version appears or none.
 * The new name goes to version[cap].
 * Copying: symlinks to files are copied as files; symlinked folders and special
 * files are refused; src's top-level model.sig, nlpd-version.json and git files
 * are left out. metadata_json must be a JSON object (else ENG_EINVAL); published_at
 * (RFC 3339 UTC) and source (src's real path) are added when absent. Concurrent
 * publishers into one dir get distinct names. On failure dir is left as it was. */
int eng_repo_publish(const char *src, const char *dir, const char *private_key_pem,
                     const char *metadata_json, char *version, size_t cap, eng_error *err);

/* The pinned version: 1 with version[cap] filled, 0 when none is pinned,
 * negative ENG_E* on a read error. */
int eng_repo_pin_get(const char *dir, char *version, size_t cap, eng_error *err);
/* Pin version (NULL: unpin) atomically. The version must exist (ENG_EINVAL). */
int eng_repo_pin_set(const char *dir, const char *version, eng_error *err);

/* The version a daemon following dir with this key would pick: the pinned
 * one if it verifies, else the newest complete version that verifies.
 * 0 with version[cap] filled; ENG_EIO when none qualifies (err says why). */
int eng_repo_current(const char *dir, const char *public_key_pem, char *version, size_t cap,
                     eng_error *err);

/* What eng_repo_prune did. removed: the version folders removed, oldest first
 * (malloc'd; free with eng_repo_prune_report_free). */
typedef struct eng_repo_prune_report {
    eng_repo_entry *removed; /* names only (has_sig, fingerprint unset) */
    int n_removed;
    int n_kept;              /* version folders left (valid or not) */
    int leftovers;           /* hidden .pruned-* folders of earlier prunes removed */
    char current[ENG_REPO_NAME_MAX + 1]; /* the version a follower serves ("" if none) */
} eng_repo_prune_report;

/* Retention: remove old version folders of dir so that at most keep (>= 1,
 * else ENG_EINVAL) valid versions remain (valid: complete and verifying with
 * public_key_pem; NULL: digests only). Never removed: the pinned version, the
 * current one (eng_repo_current), versions newer than the current one that do
 * not verify, the newest version folder (so that the next publish never reuses a
 * name; it differs from the current one only when an older one is pinned), and
 * anything that is not named v + 6 or more digits (.tmp-* publishes in progress,
 * foreign files). Kept: the current one, then the newest valid ones until keep
 * are kept; every other version folder is removed (invalid ones only when older
 * than the current one). Versions beyond keep are removed unverified. A version is first renamed to
 * dir/.pruned-<name>-<pid> (followers ignore dot-names), dir fsynced, then
 * deleted; hidden .pruned-* leftovers of a crashed prune are deleted by the next
 * (prunes of one dir are serialised by flock on dir). With no complete version,
 * nothing is removed (0); when versions exist but none verifies, or PIN is
 * unreadable, nothing is removed and the error says why. On a failure midway,
 * rep holds what was removed. rep may be NULL. */
int eng_repo_prune(const char *dir, int keep, const char *public_key_pem,
                   eng_repo_prune_report *rep, eng_error *err);
void eng_repo_prune_report_free(eng_repo_prune_report *rep);

/* The metadata file of a version (nlpd-version.json) as a malloc'd,
 * NUL-terminated string in *json, or NULL when the version has none. */
int eng_repo_read_metadata(const char *version_dir, char **json, eng_error *err);

#ifdef __cplusplus
}
#endif

#endif
