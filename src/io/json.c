/* json.c - the JSON parser of the read path: one pass over a copy of the
 * text, no recursion (nesting is bounded by a frame stack on the heap, not
 * by the C stack), every value in an arena of a few blocks.
 *
 * How the tree is built: values are pushed on a value stack as they are
 * parsed; when a container closes, its children (for objects: key and
 * value nodes, alternating) are copied from the stack into the arena as one
 * contiguous run and replaced on the stack by the container's node.  So
 * every node is copied once and a container's children are an array.
 * Strings point into the copy of the text: a string without escapes is
 * terminated in place (its closing quote becomes its NUL), one with
 * escapes is decoded in place (a decoded string is never longer than its
 * source text).  The rules follow jansson 2.14's load.c and utf.c, which
 * this parser replaces on the read path and is fuzzed against. */
#include "json.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 2048 /* jansson's JSON_PARSER_MAX_DEPTH: values, scalars included */
#define SMALL 8        /* objects of up to SMALL members: no hash table, linear search */

typedef struct block {
  struct block *next;
  size_t used, size;
  max_align_t data[];
} block;

struct dlpx__json_doc {
  dlpx__json root;
  block *blocks; /* every block of the tree; the doc itself lives in one */
};

typedef struct {
  uint32_t base;   /* where the container's children start on the value stack */
  uint32_t object; /* 1: an object, 0: an array */
} frame;

typedef struct {
  char *buf;       /* the copy of the text, NUL-terminated */
  const char *end; /* buf + len: a NUL before it is a NUL of the text */
  dlpx__json *vals;
  size_t nvals, capvals;
  frame *frames;
  size_t nframes, capframes;
  block *blocks;
  size_t next_block; /* the size of the next block of the arena */
  char point;        /* the locale's decimal point, 0 until a real is met */
  dlpx__json_error *err;
} parser;

static void *fail(parser *ps, const char *at, const char *msg) {
  ps->err->position = (size_t)(at - ps->buf);
  snprintf(ps->err->text, sizeof ps->err->text, "%s%s", msg,
           at == ps->end ? " near end of file" : "");
  return NULL;
}

static void *nomem(parser *ps) {
  ps->err->nomem = 1;
  snprintf(ps->err->text, sizeof ps->err->text, "out of memory");
  return NULL;
}

/* The same two for the functions that return a status: 1. */
static int bad(parser *ps, const char *at, const char *msg) {
  fail(ps, at, msg);
  return 1;
}

static int oom(parser *ps) {
  nomem(ps);
  return 1;
}

static void *alloc(parser *ps, size_t size) {
  size = (size + 15) & ~(size_t)15;
  block *b = ps->blocks;
  if (!b || b->size - b->used < size) {
    size_t want = ps->next_block > size ? ps->next_block : size;
    b = malloc(sizeof *b + want);
    if (!b) return NULL;
    b->next = ps->blocks;
    b->used = 0;
    b->size = want;
    ps->blocks = b;
    ps->next_block = 2 * want;
  }
  void *r = (char *)b->data + b->used;
  b->used += size;
  return r;
}

static int push(parser *ps, const dlpx__json *v) {
  if (ps->nvals == ps->capvals) {
    size_t cap = ps->capvals ? 2 * ps->capvals : 64;
    dlpx__json *n = realloc(ps->vals, cap * sizeof *n);
    if (!n) return -1;
    ps->vals = n;
    ps->capvals = cap;
  }
  ps->vals[ps->nvals++] = *v;
  return 0;
}

static char *skip_ws(char *p) {
  while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
  return p;
}

/* FNV-1a: keys are short and this runs once per key of a large object. */
static uint32_t hash(const char *s, size_t len) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

/* The slots of the hash table of an object of n > SMALL members: a power
 * of two at least 2n, so that probes stay short. */
static size_t table_size(size_t n) {
  size_t cap = 32;
  while (cap < 2 * n) cap *= 2;
  return cap;
}

static int same_key(const dlpx__json *a, const char *s, size_t len) {
  return a->len == len && memcmp(a->u.string, s, len) == 0;
}

/* The length of the UTF-8 sequence at |p| (lead byte >= 0x80), 0 when it
 * is not valid: as jansson's utf8_check_first/utf8_check_full, overlong
 * forms, UTF-16 surrogates and code points above 0x10FFFF are refused.  The
 * ranges of the second byte exclude them; the NUL after the copy ends a
 * sequence cut short (it is no continuation byte), so nothing is read past
 * it. */
static size_t utf8_len(const unsigned char *p) {
  unsigned c = p[0];
  if (c < 0xC2 || c > 0xF4 || (p[1] & 0xC0) != 0x80) return 0;
  if (c < 0xE0) return 2;
  if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F) ||
      (c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F) || (p[2] & 0xC0) != 0x80)
    return 0;
  if (c < 0xF0) return 3;
  return (p[3] & 0xC0) == 0x80 ? 4 : 0;
}

/* The four hex digits at |p| (either case), -1 if they are not; stops at
 * the first bad one (the NUL at the end of the copy among them). */
static long hex4(const char *p) {
  long v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (d < 0) return -1;
    v = v << 4 | d;
  }
  return v;
}

static char *utf8_put(char *w, long cp) {
  if (cp < 0x80) {
    *w++ = (char)cp;
  } else if (cp < 0x800) {
    *w++ = (char)(0xC0 | cp >> 6);
    *w++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *w++ = (char)(0xE0 | cp >> 12);
    *w++ = (char)(0x80 | (cp >> 6 & 0x3F));
    *w++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *w++ = (char)(0xF0 | cp >> 18);
    *w++ = (char)(0x80 | (cp >> 12 & 0x3F));
    *w++ = (char)(0x80 | (cp >> 6 & 0x3F));
    *w++ = (char)(0x80 | (cp & 0x3F));
  }
  return w;
}

/* The string whose opening quote is at |p|, decoded in place; returns the
 * byte after its closing quote, NULL on an error. */
static char *string(parser *ps, char *p, dlpx__json *v, int key) {
  char *s = ++p;
  /* the common case: plain ASCII up to the closing quote, nothing to copy */
  while ((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x80 && *p != '"' && *p != '\\') p++;
  char *w = p; /* trails p once an escape has been decoded */
  for (;;) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') break;
    if (c < 0x20)
      return fail(ps, p, p == ps->end ? "premature end of input" : "control character in a string");
    if (c >= 0x80) {
      size_t n = utf8_len((const unsigned char *)p);
      if (!n) { /* jansson's words, which callers match */
        char msg[40];
        snprintf(msg, sizeof msg, "unable to decode byte 0x%x", c);
        return fail(ps, p, msg);
      }
      memmove(w, p, n);
      w += n;
      p += n;
      continue;
    }
    if (c != '\\') {
      *w++ = *p++;
      continue;
    }
    switch (p[1]) {
      case '"': case '\\': case '/': *w++ = p[1]; break;
      case 'b': *w++ = '\b'; break;
      case 'f': *w++ = '\f'; break;
      case 'n': *w++ = '\n'; break;
      case 'r': *w++ = '\r'; break;
      case 't': *w++ = '\t'; break;
      case 'u': {
        long cp = hex4(p + 2);
        if (cp < 0) return fail(ps, p, "invalid escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) { /* a high surrogate: a low one must follow */
          long lo = p[6] == '\\' && p[7] == 'u' ? hex4(p + 8) : -2;
          if (lo == -1) return fail(ps, p + 6, "invalid escape");
          if (lo < 0xDC00 || lo > 0xDFFF) return fail(ps, p, "invalid Unicode surrogate pair");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          p += 6;
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return fail(ps, p, "lone Unicode low surrogate");
        } else if (cp == 0) {
          return fail(ps, p, key ? "NUL byte in object key not supported"
                                 : "\\u0000 is not allowed without JSON_ALLOW_NUL");
        }
        w = utf8_put(w, cp);
        p += 4;
        break;
      }
      default: return fail(ps, p, "invalid escape");
    }
    p += 2;
  }
  *w = '\0'; /* at most where the closing quote was */
  v->type = DLPX__JSON_STRING;
  v->len = (uint32_t)(w - s);
  v->u.string = s;
  return p + 1;
}

#define DIGIT(c) ((c) >= '0' && (c) <= '9')

/* The number at |p|: as jansson, an integer unless a '.' or an exponent
 * follows its digits, and an integer out of the range of long long is an
 * error (strtoll's ERANGE), not a real. */
static char *number(parser *ps, char *p, dlpx__json *v) {
  char *s = p;
  int neg = *p == '-';
  if (neg) p++;
  if (*p == '0') {
    if (DIGIT(p[1])) return fail(ps, p, "leading zero in a number");
    p++;
  } else if (DIGIT(*p)) {
    while (DIGIT(*p)) p++;
  } else {
    return fail(ps, s, "invalid token");
  }
  if (*p != '.' && *p != 'e' && *p != 'E') {
    unsigned long long m = 0, lim = neg ? (unsigned long long)LLONG_MAX + 1 : LLONG_MAX;
    const char *q = s + neg;
    for (; q < p && q < s + neg + 18; q++) m = m * 10 + (unsigned)(*q - '0'); /* < 10^18 */
    for (; q < p; q++) {
      unsigned d = (unsigned)(*q - '0');
      if (m > (lim - d) / 10)
        return fail(ps, s, neg ? "too big negative integer" : "too big integer");
      m = m * 10 + d;
    }
    v->type = DLPX__JSON_INTEGER;
    /* -(m - 1) - 1: -2^63 without overflowing on the way */
    v->u.integer = neg && m ? -(long long)(m - 1) - 1 : (long long)m;
    return p;
  }
  if (*p == '.') {
    if (!DIGIT(p[1])) return fail(ps, p, "invalid number");
    for (p++; DIGIT(*p); p++) {}
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    if (!DIGIT(*p)) return fail(ps, p, "invalid number");
    while (DIGIT(*p)) p++;
  }
  /* strtod reads the locale's decimal point: jansson puts it in place of
   * the '.' (its to_locale); the copy is ours to write, so here too */
  if (!ps->point) ps->point = localeconv()->decimal_point[0];
  if (ps->point != '.') {
    char *dot = memchr(s, '.', (size_t)(p - s));
    if (dot) *dot = ps->point;
  }
  int saved = errno;
  errno = 0;
  char *e;
  double d = strtod(s, &e);
  int range = errno == ERANGE;
  errno = saved;
  if (e != p) return fail(ps, s, "invalid number");
  if ((d == HUGE_VAL || d == -HUGE_VAL) && range) return fail(ps, s, "real number overflow");
  v->type = DLPX__JSON_REAL;
  v->u.real = d;
  return p;
}

/* Copies the children of the innermost container into the arena and
 * leaves its node on the value stack; an object's keys are checked for
 * duplicates here, through its hash table (kept for dlpx__json_get) or,
 * when small, pairwise. */
static int close_container(parser *ps) {
  frame f = ps->frames[--ps->nframes];
  size_t n = ps->nvals - f.base, members = f.object ? n / 2 : n;
  size_t slots = f.object && members > SMALL ? table_size(members) : 0;
  dlpx__json *items = NULL;
  if (n) {
    items = alloc(ps, n * sizeof *items + slots * sizeof(uint32_t));
    if (!items) return oom(ps);
    memcpy(items, ps->vals + f.base, n * sizeof *items);
  }
  if (f.object) {
    uint32_t *table = slots ? (uint32_t *)(items + n) : NULL;
    if (slots) memset(table, 0, slots * sizeof *table);
    for (size_t i = 0; i < members; i++) {
      const dlpx__json *k = &items[2 * i];
      int dup = 0;
      if (!slots) {
        for (size_t j = 0; j < i && !dup; j++) dup = same_key(&items[2 * j], k->u.string, k->len);
      } else {
        size_t at = hash(k->u.string, k->len) & (slots - 1);
        for (; table[at] && !dup; at = (at + 1) & (slots - 1))
          dup = same_key(&items[2 * (table[at] - 1)], k->u.string, k->len);
        table[at] = (uint32_t)(i + 1);
      }
      /* the key's text starts one byte after its opening quote */
      if (dup) {
        char msg[48]; /* jansson's words, which callers match */
        snprintf(msg, sizeof msg, k->len <= 18 ? "duplicate object key near '\"%s\"'"
                                               : "duplicate object key", k->u.string);
        return bad(ps, k->u.string - 1, msg);
      }
    }
  }
  ps->nvals = f.base;
  dlpx__json node = {.type = f.object ? DLPX__JSON_OBJECT : DLPX__JSON_ARRAY,
                     .len = (uint32_t)members, .u.items = items};
  return push(ps, &node) ? oom(ps) : 0;
}

static int open_container(parser *ps, int object) {
  if (ps->nframes == ps->capframes) {
    size_t cap = ps->capframes ? 2 * ps->capframes : 32;
    frame *n = realloc(ps->frames, cap * sizeof *n);
    if (!n) return oom(ps);
    ps->frames = n;
    ps->capframes = cap;
  }
  ps->frames[ps->nframes++] = (frame){(uint32_t)ps->nvals, (uint32_t)object};
  return 0;
}

/* The whole grammar, iteratively: |value| parses one value at |p|, |next|
 * what may follow a value (in the innermost container, or the end). */
static int run(parser *ps, dlpx__json *root) {
  char *p = skip_ws(ps->buf);
  if (*p != '{' && *p != '[') return bad(ps, p, "'[' or '{' expected");
value:
  if (ps->nframes >= MAX_DEPTH) return bad(ps, p, "maximum parsing depth reached");
  {
    dlpx__json v = {0};
    switch (*p) {
      case '{': case '[': {
        int object = *p == '{';
        if (open_container(ps, object)) return 1;
        p = skip_ws(p + 1);
        if (*p == (object ? '}' : ']')) goto close;
        if (object) goto key;
        goto value;
      }
      case '"': p = string(ps, p, &v, 0); break;
      case '-': case '0': case '1': case '2': case '3': case '4':
      case '5': case '6': case '7': case '8': case '9': p = number(ps, p, &v); break;
      case 't':
        if (ps->end - p < 4 || memcmp(p, "true", 4) != 0) return bad(ps, p, "invalid token");
        v.type = DLPX__JSON_TRUE;
        p += 4;
        break;
      case 'f':
        if (ps->end - p < 5 || memcmp(p, "false", 5) != 0) return bad(ps, p, "invalid token");
        v.type = DLPX__JSON_FALSE;
        p += 5;
        break;
      case 'n':
        if (ps->end - p < 4 || memcmp(p, "null", 4) != 0) return bad(ps, p, "invalid token");
        v.type = DLPX__JSON_NULL;
        p += 4;
        break;
      default:
        return bad(ps, p, p == ps->end ? "premature end of input" : "invalid token");
    }
    if (!p) return 1;
    if (push(ps, &v)) return oom(ps);
  }
next:
  p = skip_ws(p);
  if (!ps->nframes) {
    if (p != ps->end) return bad(ps, p, "end of file expected");
    *root = ps->vals[0];
    return 0;
  }
  {
    int object = (int)ps->frames[ps->nframes - 1].object;
    if (*p == ',') {
      p = skip_ws(p + 1);
      if (object) goto key;
      goto value;
    }
    if (*p != (object ? '}' : ']'))
      return bad(ps, p, object ? "',' or '}' expected" : "',' or ']' expected");
  }
close:
  p++;
  if (close_container(ps)) return 1;
  goto next;
key:
  if (*p != '"') return bad(ps, p, "string expected (an object key)");
  {
    dlpx__json k;
    p = string(ps, p, &k, 1);
    if (!p) return 1;
    if (push(ps, &k)) return oom(ps);
  }
  p = skip_ws(p);
  if (*p != ':') return bad(ps, p, "':' expected");
  p = skip_ws(p + 1);
  goto value;
}

static void free_blocks(block *b) {
  while (b) {
    block *next = b->next;
    free(b);
    b = next;
  }
}

dlpx__json_doc *dlpx__json_parse(const char *text, size_t len, dlpx__json_error *err) {
  parser ps = {.err = err};
  memset(err, 0, sizeof *err);
  if (len >= UINT32_MAX) {
    snprintf(err->text, sizeof err->text, "a JSON text of 4 GiB or more");
    return NULL;
  }
  /* one block for the copy and the tree of a typical header (~2.3 bytes of
   * nodes and tables a byte of text); more blocks, doubling, for denser
   * texts */
  ps.next_block = sizeof(dlpx__json_doc) + len + 1 + 3 * len + 256;
  dlpx__json_doc *doc = alloc(&ps, sizeof *doc);
  ps.buf = doc ? alloc(&ps, len + 1) : NULL;
  if (!ps.buf) {
    free_blocks(ps.blocks);
    return nomem(&ps);
  }
  memcpy(ps.buf, text, len);
  ps.buf[len] = '\0';
  ps.end = ps.buf + len;
  int rc = run(&ps, &doc->root);
  free(ps.vals);
  free(ps.frames);
  if (rc) {
    free_blocks(ps.blocks);
    return NULL;
  }
  doc->blocks = ps.blocks;
  return doc;
}

const dlpx__json *dlpx__json_root(const dlpx__json_doc *doc) { return &doc->root; }

void dlpx__json_free(dlpx__json_doc *doc) {
  if (doc) free_blocks(doc->blocks);
}

const dlpx__json *dlpx__json_get(const dlpx__json *obj, const char *key) {
  if (!dlpx__json_is(obj, DLPX__JSON_OBJECT)) return NULL;
  size_t len = strlen(key), n = obj->len;
  const dlpx__json *items = obj->u.items;
  if (n <= SMALL) {
    for (size_t i = 0; i < n; i++)
      if (same_key(&items[2 * i], key, len)) return &items[2 * i + 1];
    return NULL;
  }
  size_t slots = table_size(n);
  const uint32_t *table = (const uint32_t *)(items + 2 * n);
  for (size_t at = hash(key, len) & (slots - 1); table[at]; at = (at + 1) & (slots - 1))
    if (same_key(&items[2 * (table[at] - 1)], key, len)) return &items[2 * table[at] - 1];
  return NULL;
}
