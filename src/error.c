/* error.c - error codes, names and the per-thread detail message. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

#define DLPX__MSG_MAX 512

static _Thread_local char last_message[DLPX__MSG_MAX];
static _Thread_local int last_code;

int dlpx__fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_message, sizeof last_message, fmt, ap);
  va_end(ap);
  last_code = code;
  return code;
}

const char *dlpx_last_error(void) { return last_message; }

int dlpx_last_error_code(void) { return last_code; }

typedef struct {
  int code;
  const char *name;
  const char *text;
} err_entry;

static const err_entry errors[] = {
    {DLPX_OK, "DLPX_OK", "success"},
    {DLPX_EINVAL, "DLPX_EINVAL", "invalid argument"},
    {DLPX_ENOMEM, "DLPX_ENOMEM", "out of memory"},
    {DLPX_EOVERFLOW, "DLPX_EOVERFLOW", "size or offset overflows 64 bits"},
    {DLPX_EDTYPE, "DLPX_EDTYPE", "unknown or unsupported data type"},
    {DLPX_ESHAPE, "DLPX_ESHAPE", "bad shape or number of dimensions"},
    {DLPX_EINDEX, "DLPX_EINDEX", "index or axis out of range"},
    {DLPX_EDEVICE, "DLPX_EDEVICE", "unsupported or unknown device"},
    {DLPX_EVERSION, "DLPX_EVERSION", "unsupported DLPack version"},
    {DLPX_EREADONLY, "DLPX_EREADONLY", "data is read-only"},
    {DLPX_ELAYOUT, "DLPX_ELAYOUT", "memory layout does not allow this without a copy"},
    {DLPX_EBOUNDS, "DLPX_EBOUNDS", "view reaches outside its storage"},
    {DLPX_ENOTSUP, "DLPX_ENOTSUP", "operation not supported"},
    {DLPX_EPYTHON, "DLPX_EPYTHON", "Python bridge not available"},
    {DLPX_ESTATE, "DLPX_ESTATE", "object is in the wrong state"},
};

static const err_entry *find(int code) {
  for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
    if (errors[i].code == code) return &errors[i];
  return NULL;
}

const char *dlpx_strerror(int code) {
  const err_entry *e = find(code);
  return e ? e->text : "unknown error";
}

const char *dlpx_error_name(int code) {
  const err_entry *e = find(code);
  return e ? e->name : "DLPX_E?";
}

int dlpx_version_number(void) { return DLPX_VERSION_NUMBER; }

const char *dlpx_version_string(void) { return DLPX_VERSION_STRING; }
