/* parse.c - the parsers of what servers and the user's files send: the
 * Content-Range header, the text of S3's XML answers, and the shared
 * credentials file (fuzzed by fuzz/fuzz_net.c). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "net.h"

#define CREDENTIALS_MAX ((size_t)1 << 20)

/* Content-Range: bytes a-b/t */
bool dlpx__content_range(const char *v, uint64_t *a, uint64_t *b, uint64_t *t) {
  while (*v == ' ') v++;
  if (strncasecmp(v, "bytes ", 6)) return false;
  char *e;
  errno = 0;
  unsigned long long x = strtoull(v + 6, &e, 10);
  if (*e != '-' || errno) return false;
  unsigned long long y = strtoull(e + 1, &e, 10);
  if (*e != '/' || errno || y < x) return false;
  unsigned long long z = 0;
  if (e[1] != '*') {
    z = strtoull(e + 1, &e, 10);
    if (errno || y >= z) return false;
  }
  *a = x, *b = y, *t = z;
  return true;
}


/* The text of the first <tag>...</tag> in |xml| (a new string), or NULL. */
char *dlpx__xml_text(const char *xml, const char *tag, const char **after, bool decode) {
  char open[64], close_[64];
  snprintf(open, sizeof open, "<%s>", tag);
  snprintf(close_, sizeof close_, "</%s>", tag);
  const char *a = xml ? strstr(xml, open) : NULL;
  if (!a) return NULL;
  a += strlen(open);
  const char *b = strstr(a, close_);
  if (!b) return NULL;
  if (after) *after = b + strlen(close_);
  size_t n = (size_t)(b - a);
  char *s = malloc(n + 1);
  if (!s) return NULL;
  /* XML's five entities */
  size_t j = 0;
  for (size_t i = 0; i < n; i++) {
    static const struct { const char *ent; char ch; } ents[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    bool done = false;
    for (size_t e = 0; decode && a[i] == '&' && e < 5 && !done; e++) {
      size_t el = strlen(ents[e].ent);
      if (i + el <= n && strncmp(a + i, ents[e].ent, el) == 0) {
        s[j++] = ents[e].ch;
        i += el - 1;
        done = true;
      }
    }
    if (!done) s[j++] = a[i];
  }
  s[j] = '\0';
  return s;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
    s[--n] = '\0';
  return s;
}

int dlpx__credentials_parse(const char *text, size_t len, const char *profile, char **id,
                            char **secret, char **token) {
  char *buf = malloc(len + 1);
  if (!buf) return dlpx__fail(DLPX_ENOMEM, "no memory for credentials");
  memcpy(buf, text, len);
  buf[len] = '\0';
  bool in = false;
  int rc = 0;
  char *save = NULL;
  for (char *line = buf; line && !rc; line = save) {
    char *nl = memchr(line, '\n', (size_t)(buf + len - line));
    save = nl ? nl + 1 : NULL;
    if (nl) *nl = '\0';
    if (line >= buf + len) break;
    char *s = trim(line);
    if (*s == '#' || *s == ';' || !*s) continue;
    if (*s == '[') {
      char *e = strchr(s, ']');
      if (!e) continue;
      *e = '\0';
      in = strcmp(trim(s + 1), profile) == 0;
      continue;
    }
    if (!in) continue;
    char *eq = strchr(s, '=');
    if (!eq) continue;
    *eq = '\0';
    char *k = trim(s), *v = trim(eq + 1);
    char **slot = strcmp(k, "aws_access_key_id") == 0       ? id
                  : strcmp(k, "aws_secret_access_key") == 0 ? secret
                  : strcmp(k, "aws_session_token") == 0     ? token
                                                            : NULL;
    if (!slot) continue;
    free(*slot);
    *slot = strdup(v);
    if (!*slot) rc = dlpx__fail(DLPX_ENOMEM, "no memory for credentials");
  }
  memset(buf, 0, len);
  free(buf);
  return rc;
}

int dlpx__read_credentials(const char *profile, char **id, char **secret, char **token) {
  char path[4096];
  const char *f = getenv("AWS_SHARED_CREDENTIALS_FILE");
  if (f && *f) {
    snprintf(path, sizeof path, "%s", f);
  } else {
    const char *home = getenv("HOME");
    if (!home || !*home) return 0;
    snprintf(path, sizeof path, "%s/.aws/credentials", home);
  }
  FILE *fp = fopen(path, "re");
  if (!fp) return 0; /* no file: no credentials from it */
  char *text = malloc(CREDENTIALS_MAX);
  if (!text) {
    fclose(fp);
    return dlpx__fail(DLPX_ENOMEM, "no memory for credentials");
  }
  size_t n = fread(text, 1, CREDENTIALS_MAX, fp);
  fclose(fp);
  int rc = dlpx__credentials_parse(text, n, profile, id, secret, token);
  memset(text, 0, n);
  free(text);
  return rc;
}
