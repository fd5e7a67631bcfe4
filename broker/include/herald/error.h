/* herald/error.h — the one error table of Herald, shared by the broker and its plugins.
 *
 * Every function that can fail returns 0 or a negative HD_E* code. Codes are split into
 * temporary (try again later: HD_EAGAIN, HD_EFULL, HD_EIO, HD_ERATE, HD_ECLOSED) and permanent
 * ones; hd_err_temporary() tells which. hd_err_from_uv() and hd_err_from_mdb() map the codes of
 * libuv and LMDB onto this table so that callers see one vocabulary.
 */
#ifndef HERALD_ERROR_H
#define HERALD_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, wire code, text) — the wire code is what clients see in {"error": ...}. */
#define HD_ERRNO_MAP(X)                                                        \
  X(EINVAL,    -1,  "bad_request",   "malformed or invalid request")          \
  X(ENOMEM,    -2,  "no_memory",     "out of memory")                         \
  X(EAUTH,     -3,  "unauthorized",  "missing or wrong credentials")          \
  X(EFORBID,   -4,  "forbidden",     "not allowed for these credentials")     \
  X(ENOTFOUND, -5,  "not_found",     "no such object")                        \
  X(ETOOBIG,   -6,  "too_large",     "request or value too large")            \
  X(EFULL,     -7,  "store_full",    "message store is full")                 \
  X(EIO,       -8,  "io_error",      "storage or I/O failure")                \
  X(EAGAIN,    -9,  "try_again",     "temporary failure, try again")          \
  X(ECLOSED,   -10, "shutting_down", "broker is shutting down")               \
  X(EEXIST,    -11, "exists",        "already exists")                        \
  X(ERATE,     -12, "rate_limited",  "too many requests")                     \
  X(EABI,      -13, "abi_mismatch",  "plugin ABI version mismatch")           \
  X(ECONFIG,   -14, "bad_config",    "invalid configuration")                 \
  X(ECANCELED, -15, "canceled",      "operation canceled")

typedef enum {
#define HD__ERR_ENUM(name, val, code, text) HD_##name = (val),
  HD_ERRNO_MAP(HD__ERR_ENUM)
#undef HD__ERR_ENUM
} hd_errno_t;

/* Human text for an HD_E* code; never NULL. */
const char *hd_strerror(int err);
/* Short machine code for an HD_E* code ("not_found"); never NULL. */
const char *hd_err_code(int err);
/* 1 if the failure may go away by itself (retry later), 0 if retrying cannot help. */
int hd_err_temporary(int err);
/* Map a libuv error (negative errno) to HD_E*. 0 stays 0. */
int hd_err_from_uv(int uverr);
/* Map an LMDB return code to HD_E*. 0 stays 0. */
int hd_err_from_mdb(int rc);

#ifdef __cplusplus
}
#endif
#endif
