/* test_json.c - src/io/json.c, the parser of the read path: every rule of
 * the language it shares with jansson (which it replaced there), each case
 * also checked against jansson itself (tests/json_oracle.h), the subtle
 * ones named; exhaustive runs over short UTF-8 sequences and \u escapes;
 * the depth limit at its edge; large objects (the hash table); the value
 * tree and lookups; error positions. */
#include "config.h"

#include <limits.h>
#include <locale.h>

#include "check.h"
#include "json_oracle.h"

/* Parses |len| bytes at |text| with both parsers; fails unless they agree
 * and the text is accepted (|want| 1) or rejected (0). */
#define EXPECT_LEN(want, text, len)                                                     \
  do {                                                                                  \
    int acc_ = -1;                                                                      \
    const char *d_ = json_oracle_check((text), (len), &acc_);                           \
    if (d_) {                                                                           \
      CHECK_FAIL_("%s: \"%.60s\" (%zu bytes)", d_, (text), (size_t)(len));              \
      return;                                                                           \
    }                                                                                   \
    if (acc_ != (want)) {                                                               \
      CHECK_FAIL_("\"%.60s\": %s, expected the other way", (text),                      \
                  acc_ ? "accepted" : "rejected");                                      \
      return;                                                                           \
    }                                                                                   \
  } while (0)
#define EXPECT(want, text) EXPECT_LEN(want, text, strlen(text))

static void test_syntax(void) {
  /* the top value: jansson without JSON_DECODE_ANY takes only [ or { */
  EXPECT(1, "{}");
  EXPECT(1, "[]");
  EXPECT(1, " \t\r\n{ \t\r\n} \t\r\n");
  EXPECT(0, "1");
  EXPECT(0, "\"a\"");
  EXPECT(0, "null");
  EXPECT(0, "");
  EXPECT(0, "   ");
  EXPECT(0, "\f{}"); /* form feed, vertical tab: not JSON whitespace */
  EXPECT(0, "{}\v");
  EXPECT(0, "{}x");
  EXPECT(0, "{} {}");
  EXPECT(0, "{}]");
  EXPECT(0, "{");
  EXPECT(0, "[");
  EXPECT(0, "[1");
  EXPECT(0, "[1,");
  EXPECT(0, "[1,]"); /* trailing commas */
  EXPECT(0, "{\"a\":1,}");
  EXPECT(0, "[,1]");
  EXPECT(0, "[1 2]");
  EXPECT(0, "{\"a\" 1}");
  EXPECT(0, "{\"a\":}");
  EXPECT(0, "{\"a\"}");
  EXPECT(0, "{1:1}");
  EXPECT(0, "{'a':1}");
  EXPECT(0, "{a:1}");
  EXPECT(0, "[}");
  EXPECT(0, "{]");
  EXPECT(1, "[true,false,null]");
  EXPECT(0, "[tru]");
  EXPECT(0, "[truex]");
  EXPECT(0, "[True]");
  EXPECT(0, "[nul]");
  EXPECT(0, "[t");
  EXPECT(0, "[NaN]");
  EXPECT(0, "[Infinity]");
  EXPECT(0, "[/**/]");
  EXPECT(1, "[[],{},[[]],{\"a\":{\"b\":[{}]}}]");
  /* NUL bytes in the text, anywhere */
  EXPECT_LEN(0, "{}\0", 3);
  EXPECT_LEN(0, "{\0}", 3);
  EXPECT_LEN(0, "[\"a\0\"]", 6);
  EXPECT_LEN(0, "\0{}", 3);
  /* jansson accepts a NUL right after a number or a literal (it drops
   * it); json.c refuses every NUL (the oracle checks only that) */
  EXPECT_LEN(0, "[3\0]", 4);
  EXPECT_LEN(0, "[true\0]", 7);
  EXPECT_LEN(0, "[1.5\0,2]", 8);
  EXPECT_LEN(1, "{}  ", 4);
  EXPECT_LEN(0, "{}", 1); /* the length counts, not a NUL */
}

static void test_numbers(void) {
  EXPECT(1, "[0,-0,1,-1,123,9223372036854775807,-9223372036854775808]");
  EXPECT(0, "[9223372036854775808]");  /* strtoll's ERANGE: an error, not a real */
  EXPECT(0, "[-9223372036854775809]");
  EXPECT(0, "[123456789012345678901234567890]");
  EXPECT(1, "[1.0,1e2,1E2,1e+2,1e-2,-0.0,0.5,0e0,1.5e308,4.9e-324,1e-400,-1e-400]");
  EXPECT(1, "[1.7976931348623157e308,-1.7976931348623157e308,1.7976931348623158e308]");
  EXPECT(0, "[1.7976931348623159e308]"); /* rounds to infinity: "real number overflow" */
  EXPECT(0, "[1e309]");
  EXPECT(0, "[-1e400]");
  EXPECT(1, "[123456789012345678901234567890.0]");
  EXPECT(1, "[1e0000000000000000000000000000001]");
  EXPECT(0, "[01]"); /* leading zeros */
  EXPECT(0, "[-01]");
  EXPECT(0, "[00]");
  EXPECT(0, "[+1]");
  EXPECT(0, "[-]");
  EXPECT(0, "[- 1]");
  EXPECT(0, "[.5]");
  EXPECT(0, "[1.]");
  EXPECT(0, "[1.e5]");
  EXPECT(0, "[1e]");
  EXPECT(0, "[1e+]");
  EXPECT(0, "[1.5.3]");
  EXPECT(0, "[0x10]");
  EXPECT(0, "[1f]");
  EXPECT(0, "[1-2]");
  EXPECT(0, "[--1]");
  EXPECT(0, "[1");
  EXPECT(0, "[1.5");
  EXPECT(0, "[1e5");
  /* the integer/real distinction and the values */
  dlpx__json_error err;
  dlpx__json_doc *doc = dlpx__json_parse("[-0,1.0,1e2,-9223372036854775808,-0.0]", 38, &err);
  ASSERT_TRUE(doc);
  const dlpx__json *a = dlpx__json_root(doc);
  ASSERT_EQ(a->type, DLPX__JSON_ARRAY);
  ASSERT_EQ(a->len, 5);
  ASSERT_EQ(a->u.items[0].type, DLPX__JSON_INTEGER); /* "-0" is the integer 0 */
  ASSERT_EQ(a->u.items[0].u.integer, 0);
  ASSERT_EQ(a->u.items[1].type, DLPX__JSON_REAL);
  ASSERT_TRUE(a->u.items[1].u.real == 1.0);
  ASSERT_EQ(a->u.items[2].type, DLPX__JSON_REAL);
  ASSERT_TRUE(a->u.items[2].u.real == 100.0);
  ASSERT_EQ(a->u.items[3].type, DLPX__JSON_INTEGER);
  ASSERT_TRUE(a->u.items[3].u.integer == LLONG_MIN);
  ASSERT_EQ(a->u.items[4].type, DLPX__JSON_REAL);
  dlpx__json_free(doc);
}

static void test_strings(void) {
  EXPECT(1, "[\"\",\"a\",\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]");
  EXPECT(1, "{\"\\u0041\\u00e9\\u20AC\\uFFFF\\uD83D\\uDE00\":\"\\ud800\\udc00\\udbff\\udfff\"}");
  EXPECT(0, "[\"\\u0000\"]"); /* no JSON_ALLOW_NUL: refused in values */
  EXPECT(0, "{\"\\u0000\":1}"); /* and in keys */
  EXPECT(0, "[\"a\\u0000b\"]");
  EXPECT(1, "[\"\\u0001\"]"); /* escaped, a control character is fine */
  EXPECT(0, "[\"\\uD800\"]"); /* lone surrogates */
  EXPECT(0, "[\"\\uDC00\"]");
  EXPECT(0, "[\"\\uD800x\"]");
  EXPECT(0, "[\"\\uD800\\n\"]");
  EXPECT(0, "[\"\\uD800\\uD800\"]");
  EXPECT(0, "[\"\\uD800\\u0041\"]");
  EXPECT(0, "[\"\\uD800\\uDG00\"]");
  EXPECT(0, "[\"\\uDC00\\uD800\"]");
  EXPECT(0, "[\"\\u12\"]");
  EXPECT(0, "[\"\\u12G4\"]");
  EXPECT(0, "[\"\\U0041\"]");
  EXPECT(0, "[\"\\x41\"]");
  EXPECT(0, "[\"\\a\"]");
  EXPECT(0, "[\"\\'\"]");
  EXPECT(0, "[\"\\\"]");
  EXPECT(0, "[\"\\");
  EXPECT(0, "[\"abc");
  EXPECT(0, "[\"\t\"]"); /* raw control characters */
  EXPECT(0, "[\"\n\"]");
  EXPECT(0, "[\"\x1f\"]");
  EXPECT(1, "[\"\x7f\"]"); /* DEL is no control character to JSON */
  EXPECT(1, "[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\xed\x9f\xbf\xee\x80\x80\"]");
  EXPECT(0, "[\"\xc0\x80\"]");         /* overlong */
  EXPECT(0, "[\"\xe0\x9f\xbf\"]");
  EXPECT(0, "[\"\xf0\x8f\xbf\xbf\"]");
  EXPECT(0, "[\"\xed\xa0\x80\"]");     /* a surrogate in UTF-8 */
  EXPECT(0, "[\"\xf4\x90\x80\x80\"]"); /* above U+10FFFF */
  EXPECT(0, "[\"\xf5\x80\x80\x80\"]");
  EXPECT(0, "[\"\x80\"]");             /* a lone continuation byte */
  EXPECT(0, "[\"\xc3\"]");             /* cut short */
  EXPECT(0, "[\"\xe2\x82\"]");
  EXPECT_LEN(0, "[\"\xe2\x82", 5);    /* cut short at the end of the text */
  EXPECT(0, "[\"\xff\"]");
  EXPECT(0, "[\xc3\xa9]"); /* UTF-8 outside a string */
  /* decoded in place, NUL-terminated, the length in bytes */
  dlpx__json_error err;
  const char *t = "[\"a\\n\\u00e9\\ud83d\\ude00z\",\"plain\"]";
  dlpx__json_doc *doc = dlpx__json_parse(t, strlen(t), &err);
  ASSERT_TRUE(doc);
  const dlpx__json *a = dlpx__json_root(doc);
  ASSERT_EQ(a->u.items[0].len, 9);
  ASSERT_STR_EQ(a->u.items[0].u.string, "a\n\xc3\xa9\xf0\x9f\x98\x80z");
  ASSERT_STR_EQ(a->u.items[1].u.string, "plain");
  ASSERT_TRUE(a->u.items[1].u.string < t || a->u.items[1].u.string > t + strlen(t)); /* a copy */
  dlpx__json_free(doc);
}

/* Every 1- and 2-byte sequence, and the 3- and 4-byte ones over the edges
 * of each byte's ranges,
 * in a string; every \uXXXX, and high surrogates with every low one. */
static void test_exhaustive(void) {
  char buf[32];
  /* Under valgrind a sample (every step-th case, the step prime): each case
   * runs both parsers, and the whole set takes minutes there; the native,
   * ASAN and UBSAN runs take them all. */
  unsigned step = under_valgrind() ? 37 : 1;
  for (unsigned a = 0; a < 256; a++)
    for (unsigned b = 0; b < 256; b += step) {
      int n = snprintf(buf, sizeof buf, "[\"%c%c\"]", (char)a, (char)b);
      const char *d = json_oracle_check(buf, (size_t)n, NULL);
      if (d) {
        CHECK_FAIL_("%s: bytes %02x %02x", d, a, b);
        return;
      }
    }
  static const unsigned char tails[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff};
  for (unsigned a = 0xc0; a < 256; a += step > 1 ? 7 : 1)
    for (size_t b = 0; b < sizeof tails; b++)
      for (size_t c = 0; c < sizeof tails; c++)
        for (size_t e = 0; e < sizeof tails; e++) {
          char s[] = {'[', '"', (char)a, (char)tails[b], (char)tails[c], (char)tails[e], '"', ']'};
          const char *d = json_oracle_check(s, sizeof s, NULL);
          if (d) {
            CHECK_FAIL_("%s: bytes %02x %02x %02x %02x", d, a, tails[b], tails[c], tails[e]);
            return;
          }
        }
  for (unsigned u = 0; u < 0x10000; u += step) {
    int n = snprintf(buf, sizeof buf, "[\"\\u%04x\"]", u);
    const char *d = json_oracle_check(buf, (size_t)n, NULL);
    if (d) {
      CHECK_FAIL_("%s: \\u%04x", d, u);
      return;
    }
  }
  for (unsigned hi = 0xd800; hi < 0xdc00; hi += 0x3f)
    for (unsigned lo = 0xd700; lo < 0xe100; lo += step) {
      int n = snprintf(buf, sizeof buf, "[\"\\u%04X\\u%04x\"]", hi, lo);
      const char *d = json_oracle_check(buf, (size_t)n, NULL);
      if (d) {
        CHECK_FAIL_("%s: \\u%04X\\u%04x", d, hi, lo);
        return;
      }
    }
}

/* |n| nested arrays (or objects) around |inner|. */
static char *nest(int n, int objects, const char *inner) {
  size_t il = strlen(inner), per = objects ? 5 : 1;
  char *s = malloc((size_t)n * (per + 1) + il + 1), *w = s;
  if (!s) return NULL;
  for (int i = 0; i < n; i++) {
    memcpy(w, objects ? "{\"a\":" : "[", per);
    w += per;
  }
  memcpy(w, inner, il);
  w += il;
  for (int i = 0; i < n; i++) *w++ = objects ? '}' : ']';
  *w = '\0';
  return s;
}

/* jansson counts every value toward JSON_PARSER_MAX_DEPTH (2048), scalars
 * too: 2048 empty arrays nest, 2048 around a scalar do not. */
static void test_depth(void) {
  static const struct {
    int n, objects;
    const char *inner;
    int want;
  } cases[] = {
      {2047, 0, "1", 1}, {2048, 0, "", 1},   {2048, 0, "1", 0},    {2048, 0, "[]", 0},
      {2049, 0, "", 0},  {2047, 1, "1", 1},  {2048, 1, "1", 0},    {2047, 1, "{}", 1},
      {2048, 1, "{}", 0}, {100000, 0, "", 0}, {2047, 0, "\"x\"", 1}, {2048, 0, "\"x\"", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *s = nest(cases[i].n, cases[i].objects, cases[i].inner);
    ASSERT_TRUE(s);
    int acc = -1;
    const char *d = json_oracle_check(s, strlen(s), &acc);
    free(s);
    if (d || acc != cases[i].want) {
      CHECK_FAIL_("case %zu (%d deep around \"%s\"): %s", i, cases[i].n, cases[i].inner,
                  d ? d : "accepted the wrong way");
      return;
    }
  }
}

static void test_objects(void) {
  EXPECT(0, "{\"a\":1,\"a\":2}"); /* duplicates, at any depth */
  EXPECT(0, "[{\"a\":1,\"b\":2,\"a\":3}]");
  EXPECT(0, "{\"x\":{\"y\":{\"a\":1,\"a\":1}}}");
  EXPECT(0, "{\"a\":1,\"\\u0061\":2}"); /* the same key, escaped */
  EXPECT(1, "{\"a\":1,\"A\":2,\"a \":3,\"\":4}");
  EXPECT(0, "{\"\":1,\"\":2}");
  EXPECT(1, "{\"a\":{\"a\":{\"a\":1}}}"); /* the same key in different objects */
  /* large objects (the hash table), with and without a duplicate */
  size_t n = 20000;
  char *s = malloc(n * 24 + 16);
  ASSERT_TRUE(s);
  for (int dup = 0; dup < 3; dup++) {
    char *w = s;
    *w++ = '{';
    for (size_t i = 0; i < n; i++)
      w += sprintf(w, "%s\"k%zu\":%zu", i ? "," : "", dup == 1 && i == n - 1 ? (size_t)7 : i, i);
    if (dup == 2) w += sprintf(w, ",\"k%zu\":0", n / 2);
    *w++ = '}';
    int acc = -1;
    const char *d = json_oracle_check(s, (size_t)(w - s), &acc);
    if (d || acc != !dup) {
      free(s);
      CHECK_FAIL_("%zu members, duplicate %d: %s", n, dup, d ? d : "accepted the wrong way");
      return;
    }
  }
  /* every size around the switch from pairwise checks to the table */
  for (size_t m = 1; m < 40; m++)
    for (size_t dup = 0; dup <= m; dup++) {
      char *w = s;
      *w++ = '{';
      for (size_t i = 0; i < m; i++) w += sprintf(w, "%s\"%zu\":0", i ? "," : "", i);
      if (dup < m) w += sprintf(w, ",\"%zu\":0", dup);
      *w++ = '}';
      int acc = -1;
      const char *d = json_oracle_check(s, (size_t)(w - s), &acc);
      if (d || acc != (dup == m)) {
        free(s);
        CHECK_FAIL_("%zu members, duplicate of %zu: %s", m, dup, d ? d : "the wrong way");
        return;
      }
    }
  free(s);
  /* member order and lookups */
  dlpx__json_error err;
  const char *t = "{\"z\":1,\"a\":[2,3],\"m\":\"x\"}";
  dlpx__json_doc *doc = dlpx__json_parse(t, strlen(t), &err);
  ASSERT_TRUE(doc);
  const dlpx__json *o = dlpx__json_root(doc);
  ASSERT_EQ(o->len, 3);
  ASSERT_STR_EQ(dlpx__json_key(o, 0), "z");
  ASSERT_STR_EQ(dlpx__json_key(o, 1), "a");
  ASSERT_STR_EQ(dlpx__json_key(o, 2), "m");
  ASSERT_PTR_EQ(dlpx__json_get(o, "a"), dlpx__json_value(o, 1));
  ASSERT_EQ(dlpx__json_get(o, "a")->len, 2);
  ASSERT_PTR_EQ(dlpx__json_get(o, "b"), NULL);
  ASSERT_PTR_EQ(dlpx__json_get(o, ""), NULL);
  ASSERT_PTR_EQ(dlpx__json_get(dlpx__json_get(o, "a"), "a"), NULL); /* not an object */
  ASSERT_PTR_EQ(dlpx__json_get(NULL, "a"), NULL);
  dlpx__json_free(doc);
}

/* Errors name the byte where they were found. */
static void test_errors(void) {
  static const struct {
    const char *text;
    size_t position;
    const char *words;
  } cases[] = {
      {"{\"a\":1,\"a\":2}", 7, "duplicate"},
      {"[1,2,x]", 5, "invalid token"},
      {"[01]", 1, "leading zero"},
      {"[\"ab\x01\"]", 4, "control character"},
      {"[\"\\uD800\"]", 2, "surrogate"},
      {"[\"\\u0000\"]", 2, "\\u0000 is not allowed"},
      {"{\"\\u0000\":1}", 2, "NUL byte in object key"},
      {"[\"\xc0\xaf\"]", 2, "unable to decode byte 0xc0"},
      {"[9223372036854775808]", 1, "too big integer"},
      {"[1e999]", 1, "overflow"},
      {"{}x", 2, "end of file expected"},
      {"[1", 2, "near end of file"},
      {"5", 0, "'[' or '{' expected"},
      {"{\"a\" 1}", 5, "':' expected"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    dlpx__json_error err;
    dlpx__json_doc *doc = dlpx__json_parse(cases[i].text, strlen(cases[i].text), &err);
    if (doc || err.nomem || err.position != cases[i].position || !strstr(err.text, cases[i].words)) {
      CHECK_FAIL_("case %zu \"%s\": position %zu, \"%s\" (expected %zu, \"%s\")", i, cases[i].text,
                  err.position, err.text, cases[i].position, cases[i].words);
      dlpx__json_free(doc);
      return;
    }
  }
  /* through dlpx_st_header_parse: the position in the message */
  dlpx_st_header *h = NULL;
  ASSERT_RC(DLPX_EFORMAT, dlpx_st_header_parse("{\"a\":1,\"a\":2}", 13, 0, &h));
  ASSERT_MSG("not valid JSON: duplicate object key near '\"a\"' (at byte 7)");
}

/* strtod reads the locale's decimal point; the parser must not. */
static void test_locale(void) {
  const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"};
  const char *got = NULL;
  for (size_t i = 0; i < 4 && !got; i++) got = setlocale(LC_NUMERIC, names[i]);
  if (!got) SKIP("no locale with a decimal comma");
  dlpx__json_error err;
  dlpx__json_doc *doc = dlpx__json_parse("[1.5,2.25e1]", 12, &err);
  setlocale(LC_NUMERIC, "C");
  ASSERT_TRUE(doc);
  ASSERT_TRUE(dlpx__json_root(doc)->u.items[0].u.real == 1.5);
  ASSERT_TRUE(dlpx__json_root(doc)->u.items[1].u.real == 22.5);
  dlpx__json_free(doc);
}

int main(void) {
  RUN(test_syntax);
  RUN(test_numbers);
  RUN(test_strings);
  RUN(test_exhaustive);
  RUN(test_depth);
  RUN(test_objects);
  RUN(test_errors);
  RUN(test_locale);
  CHECK_DONE();
}
