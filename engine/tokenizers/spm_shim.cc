// spm_shim.cc - C interface to libsentencepiece (see spm_shim.h). The only C++
// in the engine: exceptions never cross into C (every entry point catches).
#include "tokenizers/spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

struct eng_spm {
    sentencepiece::SentencePieceProcessor sp;
};

static int fail(eng_error *err, int code, const char *path, const char *what)
{
    if (err) {
        std::snprintf(err->msg, sizeof err->msg, "%s: %s", path, what);
        err->code = code;
    }
    return code;
}

extern "C" int eng_spm_load(const char *path, eng_spm **out, eng_error *err)
{
    *out = nullptr;
    try {
        FILE *f = std::fopen(path, "rb");
        if (!f)
            return fail(err, ENG_EIO, path, "cannot open the SentencePiece model");
        std::fclose(f);
        eng_spm *s = new eng_spm;
        auto st = s->sp.Load(path);
        if (!st.ok()) {
            std::string why = "not a valid SentencePiece model (" + st.ToString() + ")";
            delete s;
            return fail(err, ENG_EFORMAT, path, why.c_str());
        }
        *out = s;
        return ENG_OK;
    } catch (const std::bad_alloc &) {
        return fail(err, ENG_ENOMEM, path, "out of memory loading the SentencePiece model");
    } catch (...) {
        return fail(err, ENG_EFORMAT, path, "the SentencePiece library failed to load it");
    }
}

extern "C" void eng_spm_free(eng_spm *spm)
{
    delete spm;
}

extern "C" int eng_spm_encode(const eng_spm *spm, const char *text, size_t len,
                              eng_spm_piece_fn fn, void *user)
{
    try {
        std::vector<std::string> pieces;
        if (!spm->sp.Encode(absl::string_view(text, len), &pieces).ok())
            return ENG_EINVAL;
        for (const std::string &p : pieces) {
            int rc = fn(p.data(), p.size(), user);
            if (rc)
                return rc;
        }
        return ENG_OK;
    } catch (const std::bad_alloc &) {
        return ENG_ENOMEM;
    } catch (...) {
        return ENG_EINVAL;
    }
}

/* Hand s to C as a malloc'd NUL-terminated copy in *out (length in *out_len). */
static int copy_out(const std::string &s, char **out, size_t *out_len)
{
    char *buf = static_cast<char *>(std::malloc(s.size() + 1));
    if (!buf)
        return ENG_ENOMEM;
    std::memcpy(buf, s.data(), s.size());
    buf[s.size()] = 0;
    *out = buf;
    if (out_len)
        *out_len = s.size();
    return ENG_OK;
}

extern "C" int eng_spm_decode(const eng_spm *spm, const char *const *pieces, const size_t *lens,
                              int n, char **out, size_t *out_len)
{
    *out = nullptr;
    try {
        std::vector<std::string> v;
        v.reserve((size_t)(n > 0 ? n : 0));
        for (int i = 0; i < n; i++)
            v.emplace_back(pieces[i], lens[i]);
        std::string text;
        if (!spm->sp.Decode(v, &text).ok())
            return ENG_EINVAL;
        return copy_out(text, out, out_len);
    } catch (const std::bad_alloc &) {
        return ENG_ENOMEM;
    } catch (...) {
        return ENG_EINVAL;
    }
}

extern "C" int eng_spm_size(const eng_spm *spm)
{
    return spm->sp.GetPieceSize();
}

extern "C" int eng_spm_normalize(const eng_spm *spm, const char *text, size_t len, char **out,
                                 size_t *out_len)
{
    *out = nullptr;
    try {
        std::vector<std::string> pieces;
        if (!spm->sp.Encode(absl::string_view(text, len), &pieces).ok())
            return ENG_EINVAL;
        std::string norm;
        for (const std::string &p : pieces)
            norm += p;
        return copy_out(norm, out, out_len);
    } catch (const std::bad_alloc &) {
        return ENG_ENOMEM;
    } catch (...) {
        return ENG_EINVAL;
    }
}

extern "C" void eng_spm_piece(const eng_spm *spm, int id, const char **piece, size_t *len,
                              float *score, int *kind)
{
    const std::string &p = spm->sp.IdToPiece(id);
    *piece = p.c_str();
    *len = p.size();
    *score = spm->sp.GetScore(id);
    *kind = spm->sp.IsUnknown(id)   ? ENG_SPM_UNKNOWN
            : spm->sp.IsControl(id) ? ENG_SPM_CONTROL
            : spm->sp.IsUnused(id)  ? ENG_SPM_UNUSED
            : spm->sp.IsByte(id)    ? ENG_SPM_BYTE
                                    : ENG_SPM_NORMAL;
}

extern "C" int eng_spm_unk_id(const eng_spm *spm)
{
    return spm->sp.unk_id();
}
