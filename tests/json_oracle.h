/* json_oracle.h - differential check of src/io/json.c against jansson, the
 * parser it replaces on the read path: both parse the same bytes with the
 * flags header.c used (json_loadb, JSON_REJECT_DUPLICATES) and must agree
 * on accept or reject and, when both accept, on the whole tree (types,
 * integer values, reals bit for bit, strings byte for byte, member order,
 * array lengths; dlpx__json_get must find every member), except on texts
 * with a NUL byte, which json.c must refuse (see below).  Used by
 * tests/test_json.c and fuzz/fuzz_header.c. */
#ifndef DLPX_TESTS_JSON_ORACLE_H
#define DLPX_TESTS_JSON_ORACLE_H

#include <jansson.h>
#include <string.h>

#include "../src/io/json.h"

/* NULL when |v| and |j| are the same tree, else what differs. */
static const char *json_oracle_diff(const dlpx__json *v, json_t *j) {
  switch (json_typeof(j)) {
    case JSON_NULL: return v->type == DLPX__JSON_NULL ? NULL : "type (null)";
    case JSON_TRUE: return v->type == DLPX__JSON_TRUE ? NULL : "type (true)";
    case JSON_FALSE: return v->type == DLPX__JSON_FALSE ? NULL : "type (false)";
    case JSON_INTEGER:
      if (v->type != DLPX__JSON_INTEGER) return "type (integer)";
      return v->u.integer == json_integer_value(j) ? NULL : "integer value";
    case JSON_REAL: {
      if (v->type != DLPX__JSON_REAL) return "type (real)";
      double d = json_real_value(j);
      return memcmp(&d, &v->u.real, sizeof d) == 0 ? NULL : "real value";
    }
    case JSON_STRING:
      if (v->type != DLPX__JSON_STRING) return "type (string)";
      if (v->len != json_string_length(j) || memcmp(v->u.string, json_string_value(j), v->len))
        return "string bytes";
      return v->u.string[v->len] == '\0' ? NULL : "string not NUL-terminated";
    case JSON_ARRAY:
      if (v->type != DLPX__JSON_ARRAY) return "type (array)";
      if (v->len != json_array_size(j)) return "array length";
      for (size_t i = 0; i < v->len; i++) {
        const char *d = json_oracle_diff(&v->u.items[i], json_array_get(j, i));
        if (d) return d;
      }
      return NULL;
    case JSON_OBJECT: {
      if (v->type != DLPX__JSON_OBJECT) return "type (object)";
      if (v->len != json_object_size(j)) return "object size";
      size_t i = 0, klen;
      const char *key;
      json_t *jv;
      json_object_keylen_foreach(j, key, klen, jv) {
        const dlpx__json *k = &v->u.items[2 * i];
        if (k->type != DLPX__JSON_STRING || k->len != klen || memcmp(k->u.string, key, klen))
          return "member key or order";
        if (dlpx__json_get(v, key) != &v->u.items[2 * i + 1]) return "dlpx__json_get";
        const char *d = json_oracle_diff(&v->u.items[2 * i + 1], jv);
        if (d) return d;
        i++;
      }
      return NULL;
    }
  }
  return "jansson type";
}

/* Parses the |len| bytes at |text| with both parsers: NULL when they
 * agree, else what differs.  |accepted|: whether the text parsed. */
static const char *json_oracle_check(const char *text, size_t len, int *accepted) {
  json_error_t jerr;
  json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  dlpx__json_error err;
  dlpx__json_doc *doc = dlpx__json_parse(text, len, &err);
  const char *d = NULL;
  if (memchr(text, '\0', len)) {
    /* jansson 2.14 drops a NUL byte that directly follows a number or a
     * literal ("[3\0]" parses: its lexer "ungets" the NUL into a buffer
     * where NUL marks the end, so it is never read again); json.c refuses
     * every NUL byte, so texts with one are not compared */
    d = doc ? "dlpx__json_parse accepts a NUL byte" : NULL;
  } else if (!j && doc)
    d = "dlpx__json_parse accepts what jansson rejects";
  else if (j && !doc)
    d = err.nomem ? NULL : "dlpx__json_parse rejects what jansson accepts";
  else if (j)
    d = json_oracle_diff(dlpx__json_root(doc), j);
  if (accepted) *accepted = doc != NULL;
  dlpx__json_free(doc);
  json_decref(j);
  return d;
}

#endif
