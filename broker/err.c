/* err.c — the HD_E* table: texts, wire codes, and the mapping of libuv and LMDB codes. */
#include "herald/error.h"

#include <errno.h>
#include <lmdb.h>
#include <uv.h>

const char *hd_strerror(int err) {
  switch (err) {
  case 0: return "success";
#define HD__ERR_TEXT(name, val, code, text) case HD_##name: return text;
  HD_ERRNO_MAP(HD__ERR_TEXT)
#undef HD__ERR_TEXT
  }
  return "unknown error";
}

const char *hd_err_code(int err) {
  switch (err) {
  case 0: return "ok";
#define HD__ERR_CODE(name, val, code, text) case HD_##name: return code;
  HD_ERRNO_MAP(HD__ERR_CODE)
#undef HD__ERR_CODE
  }
  return "internal";
}

int hd_err_temporary(int err) {
  switch (err) {
  case HD_EAGAIN:
  case HD_EFULL:
  case HD_EIO:
  case HD_ERATE:
  case HD_ECLOSED:
  case HD_ENOMEM:
    return 1;
  default:
    return 0;
  }
}

int hd_err_from_uv(int uverr) {
  switch (uverr) {
  case 0: return 0;
  case UV_ENOMEM: return HD_ENOMEM;
  case UV_EINVAL: return HD_EINVAL;
  case UV_EAGAIN:
  case UV_EBUSY:
  case UV_EADDRINUSE:
  case UV_EMFILE:
  case UV_ENFILE:
    return HD_EAGAIN;
  case UV_ENOENT: return HD_ENOTFOUND;
  case UV_EEXIST: return HD_EEXIST;
  case UV_EACCES:
  case UV_EPERM:
    return HD_EFORBID;
  case UV_ENOSPC: return HD_EFULL;
  case UV_ECANCELED: return HD_ECANCELED;
  case UV_E2BIG: return HD_ETOOBIG;
  default: return HD_EIO;
  }
}

int hd_err_from_mdb(int rc) {
  switch (rc) {
  case MDB_SUCCESS: return 0;
  case MDB_NOTFOUND: return HD_ENOTFOUND;
  case MDB_KEYEXIST: return HD_EEXIST;
  case MDB_MAP_FULL:
  case MDB_TXN_FULL:
  case MDB_DBS_FULL:
  case ENOSPC:
    return HD_EFULL;
  case MDB_READERS_FULL: return HD_EAGAIN;
  case ENOMEM: return HD_ENOMEM;
  case EINVAL:
  case MDB_BAD_VALSIZE:
    return HD_EINVAL;
  default: return HD_EIO;
  }
}
