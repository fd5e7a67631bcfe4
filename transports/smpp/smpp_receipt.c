/* smpp_receipt.c — receipt text, receipt TLVs, message id normalization (see smpp_receipt.h). */
#include "smpp_receipt.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int hd_smpp_id_type_parse(const char *s, int *out) {
  static const char *const names[] = {"auto", "hex", "dec", "hex_dec", "dec_hex"};
  for (int i = 0; i < 5; i++)
    if (s && strcasecmp(s, names[i]) == 0) {
      *out = i;
      return 0;
    }
  return -1;
}

/* The value of an id read in `base`; -1 when it is not such a number or needs more than
 * 64 bits. */
static int parse_base(const char *s, size_t n, int base, uint64_t *out) {
  uint64_t v = 0;
  if (!n) return -1;
  for (size_t i = 0; i < n; i++) {
    int c = tolower((unsigned char)s[i]), d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (base == 16 && c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return -1;
    if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) return -1;
    v = v * (uint64_t)base + (uint64_t)d;
  }
  *out = v;
  return 0;
}

int hd_smpp_id_normalize(const char *id, size_t len, int type, int from_text, char *out) {
  /* Trim blanks some SMSCs pad ids with. */
  while (len && isspace((unsigned char)*id)) id++, len--;
  while (len && isspace((unsigned char)id[len - 1])) len--;
  if (!len) return -1;
  int in_base = 0, out_base = 0;
  switch (type) {
  case HD_SMPP_ID_HEX: in_base = out_base = 16; break;
  case HD_SMPP_ID_DEC: in_base = out_base = 10; break;
  case HD_SMPP_ID_HEX_DEC: out_base = 16, in_base = from_text ? 10 : 16; break;
  case HD_SMPP_ID_DEC_HEX: out_base = 10, in_base = from_text ? 16 : 10; break;
  default: break;
  }
  uint64_t v;
  if (in_base && parse_base(id, len, in_base, &v) == 0) {
    snprintf(out, HD_SMPP_ID_MAX, out_base == 16 ? "%llx" : "%llu", (unsigned long long)v);
    return 0;
  }
  /* Opaque: case-folded, leading zeros dropped (one SMSC pads "0000A1B2", another does not). */
  size_t i = 0;
  while (i + 1 < len && id[i] == '0') i++;
  size_t n = 0;
  for (; i < len && n + 1 < HD_SMPP_ID_MAX; i++) out[n++] = (char)tolower((unsigned char)id[i]);
  out[n] = 0;
  return 0;
}

static const struct {
  const char *word;
  int state;
} stat_words[] = {
    {"DELIVRD", HD_SMPP_MS_DELIVERED}, {"EXPIRED", HD_SMPP_MS_EXPIRED},
    {"DELETED", HD_SMPP_MS_DELETED},   {"UNDELIV", HD_SMPP_MS_UNDELIVERABLE},
    {"ACCEPTD", HD_SMPP_MS_ACCEPTED},  {"UNKNOWN", HD_SMPP_MS_UNKNOWN},
    {"REJECTD", HD_SMPP_MS_REJECTED},  {"ENROUTE", HD_SMPP_MS_ENROUTE},
    /* Spellings seen in the wild. */
    {"DELIVERED", HD_SMPP_MS_DELIVERED}, {"UNDELIVERABLE", HD_SMPP_MS_UNDELIVERABLE},
    {"REJECTED", HD_SMPP_MS_REJECTED},   {"ACCEPTED", HD_SMPP_MS_ACCEPTED},
};

int hd_smpp_stat_state(const char *stat) {
  for (size_t i = 0; i < sizeof stat_words / sizeof stat_words[0]; i++)
    if (strcasecmp(stat, stat_words[i].word) == 0) return stat_words[i].state;
  return HD_SMPP_MS_NONE;
}

int hd_smpp_state_final(int state) {
  return state != HD_SMPP_MS_NONE && state != HD_SMPP_MS_ENROUTE && state != HD_SMPP_MS_ACCEPTED;
}

const char *hd_smpp_state_name(int state) {
  static const char *const n[] = {"NONE",    "ENROUTE", "DELIVRD", "EXPIRED", "DELETED",
                                  "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD"};
  return state >= 0 && state <= 8 ? n[state] : "UNKNOWN";
}

/* Finds `key` (case-insensitive, at the start or after a blank) followed by ':' and copies the
 * value up to the next blank into out. Returns 0 when found. */
static int field(const char *t, size_t n, const char *key, char *out, size_t outlen) {
  size_t kl = strlen(key);
  for (size_t i = 0; i + kl < n; i++) {
    if (i && !isspace((unsigned char)t[i - 1])) continue;
    if (strncasecmp(t + i, key, kl) != 0 || t[i + kl] != ':') continue;
    size_t j = i + kl + 1, o = 0;
    while (j < n && isspace((unsigned char)t[j]) && t[j] != '\n') j++; /* "id: 123" */
    while (j < n && !isspace((unsigned char)t[j]) && t[j]) {
      if (o + 1 < outlen) out[o++] = t[j];
      j++;
    }
    out[o] = 0;
    return 0;
  }
  return -1;
}

int hd_smpp_receipt_parse(const uint8_t *text, size_t len, const char *tlv_id, int tlv_state,
                          hd_smpp_receipt *r) {
  memset(r, 0, sizeof *r);
  r->state = HD_SMPP_MS_NONE;
  const char *t = (const char *)text;
  if (!t) len = 0;
  /* Stop at "text:": what follows is the first characters of the original message, which may
   * itself contain "stat:" or "id:". */
  for (size_t i = 0; i + 5 <= len; i++)
    if ((i == 0 || isspace((unsigned char)t[i - 1])) && strncasecmp(t + i, "text:", 5) == 0) {
      len = i;
      break;
    }
  char idbuf[HD_SMPP_ID_MAX] = "";
  if (len) {
    field(t, len, "id", idbuf, sizeof idbuf);
    field(t, len, "stat", r->stat, sizeof r->stat);
    field(t, len, "err", r->err, sizeof r->err);
    for (char *c = r->stat; *c; c++) *c = (char)toupper((unsigned char)*c);
  }
  if (tlv_id && *tlv_id) {
    snprintf(r->id, sizeof r->id, "%s", tlv_id);
  } else if (*idbuf) {
    snprintf(r->id, sizeof r->id, "%s", idbuf);
    r->id_from_text = 1;
  }
  if (tlv_state > 0 && tlv_state <= 8) r->state = tlv_state;
  else if (*r->stat) r->state = hd_smpp_stat_state(r->stat);
  return *r->id && r->state != HD_SMPP_MS_NONE ? 0 : -1;
}
