/* fuzz_net.c - libFuzzer target for the parsers of what HTTP and S3
 * servers and the user's files send (src/net/parse.c): the Content-Range
 * header, the text of S3's XML answers (ListObjectsV2 pages as
 * dlpx_remote_list walks them, UploadId, error Code and Message), and the
 * shared credentials file.  Built and run by scripts/fuzz.sh with
 * -fsanitize=fuzzer,address,undefined; LeakSanitizer is on, so a leak on
 * any path is a finding.
 *
 * Each input is taken whole by each parser; what a parser accepts must
 * keep its promises: a Content-Range has a <= b < t (t 0 for "*"), a text
 * found in XML is no longer than the input, and the credentials found are
 * NUL-free strings no longer than the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dlpx/dlpx.h>

#include "../src/net/net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = '\0';
  size_t n = strlen(s); /* what a C string of the input holds */

  uint64_t a, b, t;
  if (dlpx__content_range(s, &a, &b, &t)) check(a <= b && (t == 0 || b < t));

  /* a listing, walked as dlpx_remote_list walks it */
  const char *p = s, *after = NULL;
  char *item;
  size_t items = 0;
  while (p && (item = dlpx__xml_text(p, "Contents", &after, false))) {
    check(strlen(item) <= n);
    check(after > p && after <= s + n);
    char *key = dlpx__xml_text(item, "Key", NULL, true);
    char *sz = dlpx__xml_text(item, "Size", NULL, true);
    if (key) check(strlen(key) <= strlen(item));
    free(key);
    free(sz);
    free(item);
    p = after;
    if (++items > 100000) break;
  }
  const char *tags[] = {"UploadId", "Code", "Message", "IsTruncated", "NextContinuationToken"};
  for (size_t i = 0; i < sizeof tags / sizeof *tags; i++) {
    char *v = dlpx__xml_text(s, tags[i], NULL, true);
    if (v) check(strlen(v) <= n);
    free(v);
  }

  /* the credentials file, for two profiles */
  const char *profiles[] = {"default", "p"};
  for (size_t i = 0; i < 2; i++) {
    char *id = NULL, *secret = NULL, *token = NULL;
    if (dlpx__credentials_parse((const char *)data, size, profiles[i], &id, &secret, &token) ==
        0) {
      if (id) check(strlen(id) <= size);
      if (secret) check(strlen(secret) <= size);
      if (token) check(strlen(token) <= size);
    }
    free(id);
    free(secret);
    free(token);
  }
  free(s);
  return 0;
}
