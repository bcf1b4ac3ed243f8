/* json.h - the JSON parser of the read path (internal).
 *
 * Accepts exactly the texts jansson's json_loadb(text, len,
 * JSON_REJECT_DUPLICATES, &err) accepts, with the same value tree (proved
 * by differential fuzzing in fuzz/fuzz_header.c, jansson as the oracle):
 * RFC 8259 with an object or an array at the top (jansson without
 * JSON_DECODE_ANY), duplicate keys refused at every depth, strict UTF-8,
 * no \u0000 and no NUL byte anywhere (stricter than jansson, which drops
 * a NUL right after a number or a literal), integers in the range of long
 * long (beyond it: an error, not a real), reals wherever a '.' or an
 * exponent appears, nesting up to 2048 values deep.  It exists because jansson allocates every value and every
 * object's hash table apart: a tensor file's header parses here in one pass
 * into an arena of a few blocks, ~10x faster.  Inputs of 4 GiB or more are
 * refused (the lengths are 32-bit; headers are capped far below). */
#ifndef DLPX_IO_JSON_H
#define DLPX_IO_JSON_H

#include <stddef.h>
#include <stdint.h>

enum {
  DLPX__JSON_NULL,
  DLPX__JSON_FALSE,
  DLPX__JSON_TRUE,
  DLPX__JSON_INTEGER,
  DLPX__JSON_REAL,
  DLPX__JSON_STRING,
  DLPX__JSON_ARRAY,
  DLPX__JSON_OBJECT
};

typedef struct dlpx__json dlpx__json;
struct dlpx__json {
  uint32_t type; /* DLPX__JSON_* */
  uint32_t len;  /* bytes of a string, items of an array, members of an object */
  union {
    long long integer;
    double real;
    const char *string;      /* NUL-terminated; holds no NUL (\u0000 is refused) */
    const dlpx__json *items; /* an array's len values; an object's 2 * len: key, value */
  } u;
};

/* A parsed text: the root value and the memory of the whole tree. */
typedef struct dlpx__json_doc dlpx__json_doc;

typedef struct {
  size_t position; /* the byte of the text where the error was found */
  int nomem;       /* 1: out of memory, not a fault of the text */
  char text[80];
} dlpx__json_error;

/* Parses the |len| bytes at |text| (NUL bytes in them are errors); NULL
 * with |err| set on failure.  Free with dlpx__json_free. */
dlpx__json_doc *dlpx__json_parse(const char *text, size_t len, dlpx__json_error *err);
const dlpx__json *dlpx__json_root(const dlpx__json_doc *doc);
void dlpx__json_free(dlpx__json_doc *doc);

/* The value of member |key| of |obj|; NULL when there is none or |obj| is
 * NULL or not an object. */
const dlpx__json *dlpx__json_get(const dlpx__json *obj, const char *key);

static inline int dlpx__json_is(const dlpx__json *v, uint32_t type) {
  return v && v->type == type;
}
/* Member |i| of an object (in the text's order). */
static inline const char *dlpx__json_key(const dlpx__json *obj, size_t i) {
  return obj->u.items[2 * i].u.string;
}
static inline const dlpx__json *dlpx__json_value(const dlpx__json *obj, size_t i) {
  return &obj->u.items[2 * i + 1];
}

#endif
