/* error.c - the error list (DLPX_ERROR_MAP) and the per-thread detail
 * message. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

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

/* Both copy the message up to its NUL only: these run around every
 * foreign deleter, and messages are short. */
void dlpx__error_save(dlpx__error_state *saved) {
  saved->code = last_code;
  size_t n = strnlen(last_message, sizeof last_message - 1);
  memcpy(saved->message, last_message, n);
  saved->message[n] = '\0';
}

void dlpx__error_restore(const dlpx__error_state *saved) {
  last_code = saved->code;
  size_t n = strnlen(saved->message, sizeof saved->message - 1);
  memcpy(last_message, saved->message, n);
  last_message[n] = '\0';
}

const char *dlpx_last_error(void) { return last_message; }

int dlpx_last_error_code(void) { return last_code; }

#define ERROR_ENTRY(name, value, message, exception, dlpack_exception) \
  {DLPX_##name, "DLPX_" #name, message, #exception, #dlpack_exception},

static const dlpx_error_info errors[] = {DLPX_ERROR_MAP(ERROR_ENTRY)};

const dlpx_error_info *dlpx_error_table(size_t *count) {
  if (count) *count = DLPX__COUNT(errors);
  return errors;
}

static const dlpx_error_info *find(int code) {
  for (size_t i = 0; i < DLPX__COUNT(errors); i++)
    if (errors[i].code == code) return &errors[i];
  return NULL;
}

const char *dlpx_strerror(int code) {
  if (code == DLPX_OK) return "success";
  const dlpx_error_info *e = find(code);
  return e ? e->message : "unknown error";
}

const char *dlpx_error_name(int code) {
  if (code == DLPX_OK) return "DLPX_OK";
  const dlpx_error_info *e = find(code);
  return e ? e->name : "DLPX_E?";
}
