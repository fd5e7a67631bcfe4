/* sms_codec.c — GSM 03.38 / UCS-2 text and binary SMS splitting, and MO decoding. See
 * sms_codec.h for the contract. Everything here is a pure function over caller memory plus the
 * one parts array it hands out.
 */
#include "sms_codec.h"

#include <stdlib.h>
#include <string.h>

#include "herald/error.h"

#define WHY(msg) (why ? (void)(*why = (msg)) : (void)0)

/* ---- GSM 03.38 (3GPP TS 23.038 §6.2.1) ---- */

/* The default alphabet: septet → Unicode. 0x1B is the escape to the extension table; as a
 * character it is shown as a space (§6.2.1, note on 0x1B). */
static const uint16_t gsm_basic[128] = {
  0x0040, 0x00A3, 0x0024, 0x00A5, 0x00E8, 0x00E9, 0x00F9, 0x00EC, /* 0x00 @£$¥èéùì */
  0x00F2, 0x00C7, 0x000A, 0x00D8, 0x00F8, 0x000D, 0x00C5, 0x00E5, /* 0x08 òÇ LF Øø CR Åå */
  0x0394, 0x005F, 0x03A6, 0x0393, 0x039B, 0x03A9, 0x03A0, 0x03A8, /* 0x10 Δ_ΦΓΛΩΠΨ */
  0x03A3, 0x0398, 0x039E, 0x0020, 0x00C6, 0x00E6, 0x00DF, 0x00C9, /* 0x18 ΣΘΞ ESC ÆæßÉ */
  0x0020, 0x0021, 0x0022, 0x0023, 0x00A4, 0x0025, 0x0026, 0x0027, /* 0x20  !"#¤%&' */
  0x0028, 0x0029, 0x002A, 0x002B, 0x002C, 0x002D, 0x002E, 0x002F, /* 0x28 ()*+,-./ */
  0x0030, 0x0031, 0x0032, 0x0033, 0x0034, 0x0035, 0x0036, 0x0037, /* 0x30 0-7 */
  0x0038, 0x0039, 0x003A, 0x003B, 0x003C, 0x003D, 0x003E, 0x003F, /* 0x38 89:;<=>? */
  0x00A1, 0x0041, 0x0042, 0x0043, 0x0044, 0x0045, 0x0046, 0x0047, /* 0x40 ¡A-G */
  0x0048, 0x0049, 0x004A, 0x004B, 0x004C, 0x004D, 0x004E, 0x004F, /* 0x48 H-O */
  0x0050, 0x0051, 0x0052, 0x0053, 0x0054, 0x0055, 0x0056, 0x0057, /* 0x50 P-W */
  0x0058, 0x0059, 0x005A, 0x00C4, 0x00D6, 0x00D1, 0x00DC, 0x00A7, /* 0x58 XYZÄÖÑÜ§ */
  0x00BF, 0x0061, 0x0062, 0x0063, 0x0064, 0x0065, 0x0066, 0x0067, /* 0x60 ¿a-g */
  0x0068, 0x0069, 0x006A, 0x006B, 0x006C, 0x006D, 0x006E, 0x006F, /* 0x68 h-o */
  0x0070, 0x0071, 0x0072, 0x0073, 0x0074, 0x0075, 0x0076, 0x0077, /* 0x70 p-w */
  0x0078, 0x0079, 0x007A, 0x00E4, 0x00F6, 0x00F1, 0x00FC, 0x00E0, /* 0x78 xyzäöñüà */
};

#define GSM_ESC 0x1B

/* The basic extension table (§6.2.1.1): septet after 0x1B → Unicode. */
static const struct {
  uint8_t septet;
  uint16_t cp;
} gsm_ext[] = {
  {0x0A, 0x000C}, {0x14, 0x005E}, {0x28, 0x007B}, {0x29, 0x007D}, {0x2F, 0x005C},
  {0x3C, 0x005B}, {0x3D, 0x007E}, {0x3E, 0x005D}, {0x40, 0x007C}, {0x65, 0x20AC},
};
#define GSM_EXT_N (sizeof gsm_ext / sizeof gsm_ext[0])

/* Unicode → GSM: the septet (0–0x7F), 0x100 | septet for an extension character, or -1. */
static int gsm_from_cp(uint32_t cp) {
  /* Most of printable ASCII sits at its own code; test that first. */
  if ((cp >= 0x20 && cp <= 0x23) || (cp >= 0x25 && cp <= 0x3F) || (cp >= 0x41 && cp <= 0x5A) ||
      (cp >= 0x61 && cp <= 0x7A))
    return (int)cp;
  if (cp > 0xFFFF || cp == 0x1B) /* U+001B is not the escape: it has no GSM code */
    return -1;
  for (int i = 0; i < 128; i++)
    if (gsm_basic[i] == cp && i != GSM_ESC)
      return i;
  for (size_t i = 0; i < GSM_EXT_N; i++)
    if (gsm_ext[i].cp == cp)
      return 0x100 | gsm_ext[i].septet;
  return -1;
}

/* ---- UTF-8 ---- */

/* Strict decode of one code point (RFC 3629): no overlong forms, no surrogates, ≤ U+10FFFF.
 * Returns the octets consumed, or 0 when the sequence is invalid or truncated. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
  unsigned char c = s[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t k;
  uint32_t v, min;
  if ((c & 0xE0) == 0xC0) {
    k = 2, v = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    k = 3, v = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    k = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (n < k)
    return 0;
  for (size_t i = 1; i < k; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    v = (v << 6) | (s[i] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
    return 0;
  *cp = v;
  return k;
}

static size_t utf8_put(char *o, uint32_t cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* ---- parts ---- */

void hd_sms_parts_free(hd_sms_parts_t *p) {
  if (!p)
    return;
  free(p->part);
  p->part = NULL;
  p->n = 0;
}

/* Per-part capacity in units: alone without UDH, or with the 6-octet concatenation UDH. */
#define GSM_SINGLE 160
#define GSM_CONCAT 153
#define UCS2_SINGLE 70
#define UCS2_CONCAT 67
#define CONCAT_UDH_LEN 6 /* 05 00 03 ref total seq */

/* Walks a valid UTF-8 text character by character, as units of the chosen alphabet: a GSM
 * character is 1 or 2 septets (escape), a UCS-2 character 1 or 2 UTF-16 units (surrogate pair).
 * Both splitting passes use it, so measuring and cutting cannot disagree. */
typedef struct text_walk {
  const unsigned char *s;
  size_t n, off;
  int ucs2;
} text_walk_t;

/* Next character: fills u[] with its 1 or 2 units and returns how many, 0 at the end. The text
 * was validated by text_scan(), so utf8_next() cannot fail here. */
static int walk_next(text_walk_t *w, uint16_t u[2]) {
  if (w->off >= w->n)
    return 0;
  uint32_t cp = 0;
  w->off += utf8_next(w->s + w->off, w->n - w->off, &cp);
  if (w->ucs2) {
    if (cp >= 0x10000) {
      cp -= 0x10000;
      u[0] = (uint16_t)(0xD800 | (cp >> 10));
      u[1] = (uint16_t)(0xDC00 | (cp & 0x3FF));
      return 2;
    }
    u[0] = (uint16_t)cp;
    return 1;
  }
  int g = gsm_from_cp(cp);
  if (g & 0x100) {
    u[0] = GSM_ESC;
    u[1] = (uint16_t)(g & 0x7F);
    return 2;
  }
  u[0] = (uint16_t)g;
  return 1;
}

/* Counts the parts a greedy split needs: a character that does not fit whole opens a new part,
 * which is what keeps escape and surrogate pairs together. */
static unsigned count_parts(text_walk_t w, unsigned units, unsigned single, unsigned concat) {
  if (units <= single)
    return 1;
  unsigned parts = 1, fill = 0;
  uint16_t u[2];
  int k;
  while ((k = walk_next(&w, u)) > 0) {
    if (fill + (unsigned)k > concat) {
      parts++;
      fill = 0;
    }
    fill += (unsigned)k;
  }
  return parts;
}

int hd_sms_text_info(const char *utf8, size_t len, unsigned flags, hd_sms_text_info_t *info,
                     const char **why) {
  if (!utf8 && len) {
    WHY("text is NULL");
    return HD_EINVAL;
  }
  const unsigned char *s = (const unsigned char *)utf8;
  unsigned septets = 0, ucs2_units = 0;
  int gsm = !(flags & HD_SMS_FORCE_UCS2);
  for (size_t off = 0; off < len;) {
    uint32_t cp;
    size_t k = utf8_next(s + off, len - off, &cp);
    if (!k) {
      WHY("text is not valid UTF-8");
      return HD_EINVAL;
    }
    off += k;
    ucs2_units += cp >= 0x10000 ? 2 : 1;
    if (gsm) {
      int g = gsm_from_cp(cp);
      if (g < 0)
        gsm = 0;
      else
        septets += (g & 0x100) ? 2 : 1;
    }
  }
  text_walk_t w = {s, len, 0, !gsm};
  info->alphabet = gsm ? HD_SMS_ALPHABET_GSM7 : HD_SMS_ALPHABET_UCS2;
  info->units = gsm ? septets : ucs2_units;
  info->parts = gsm ? count_parts(w, septets, GSM_SINGLE, GSM_CONCAT)
                    : count_parts(w, ucs2_units, UCS2_SINGLE, UCS2_CONCAT);
  return 0;
}

static void put_concat_udh(hd_sms_part_t *p, uint8_t ref, unsigned total, unsigned seq) {
  /* 3GPP TS 23.040 §9.2.3.24.1: UDHL 5, IEI 0x00, IEDL 3, reference, total, sequence (1-based) */
  uint8_t *u = p->sm + p->udh_len;
  u[0] = 0x00;
  u[1] = 0x03;
  u[2] = ref;
  u[3] = (uint8_t)total;
  u[4] = (uint8_t)seq;
  p->udh_len += 5;
}

int hd_sms_split_text(const char *utf8, size_t len, uint8_t ref, unsigned flags,
                      hd_sms_parts_t *out, const char **why) {
  out->part = NULL;
  out->n = 0;
  hd_sms_text_info_t info;
  int rc = hd_sms_text_info(utf8, len, flags, &info, why);
  if (rc)
    return rc;
  if (info.parts > HD_SMS_MAX_PARTS) {
    WHY("text needs more than 255 SMS parts");
    return HD_ETOOBIG;
  }
  hd_sms_part_t *parts = calloc(info.parts, sizeof *parts);
  if (!parts)
    return HD_ENOMEM;
  int ucs2 = info.alphabet == HD_SMS_ALPHABET_UCS2;
  unsigned total = info.parts;
  unsigned cap = total == 1 ? (ucs2 ? UCS2_SINGLE : GSM_SINGLE) : (ucs2 ? UCS2_CONCAT : GSM_CONCAT);
  for (unsigned i = 0; i < total; i++) {
    hd_sms_part_t *p = &parts[i];
    p->data_coding = ucs2 ? HD_SMS_DCS_UCS2 : HD_SMS_DCS_GSM7;
    p->seq = (uint8_t)(i + 1);
    p->total = (uint8_t)total;
    if (total > 1) {
      p->sm[0] = CONCAT_UDH_LEN - 1;
      p->udh_len = 1;
      put_concat_udh(p, ref, total, i + 1);
      p->esm_class = HD_SMS_ESM_UDHI;
    }
    p->sm_len = p->udh_len;
  }
  text_walk_t w = {(const unsigned char *)utf8, len, 0, ucs2};
  unsigned i = 0;
  uint16_t u[2];
  int k;
  while ((k = walk_next(&w, u)) > 0) {
    if (parts[i].units + (unsigned)k > cap)
      i++; /* count_parts() made the same cut, so i < total */
    hd_sms_part_t *p = &parts[i];
    for (int j = 0; j < k; j++) {
      if (ucs2) {
        p->sm[p->sm_len++] = (uint8_t)(u[j] >> 8);
        p->sm[p->sm_len++] = (uint8_t)u[j];
      } else {
        p->sm[p->sm_len++] = (uint8_t)u[j];
      }
    }
    p->units = (uint16_t)(p->units + k);
  }
  out->part = parts;
  out->n = total;
  return 0;
}

int hd_sms_split_binary(const uint8_t *data, size_t len, const hd_sms_ports_t *ports,
                        uint8_t ref, hd_sms_parts_t *out, const char **why) {
  out->part = NULL;
  out->n = 0;
  if (!data && len) {
    WHY("payload is NULL");
    return HD_EINVAL;
  }
  /* UDH sizes: UDHL octet + port IE (6) + concatenation IE (5). */
  size_t port_ie = ports ? 6 : 0;
  size_t single_udh = port_ie ? 1 + port_ie : 0;
  size_t concat_udh = 1 + port_ie + 5;
  size_t total;
  size_t cap;
  if (len <= HD_SMS_UD_MAX - single_udh) {
    total = 1;
    cap = HD_SMS_UD_MAX - single_udh;
  } else {
    cap = HD_SMS_UD_MAX - concat_udh;
    total = (len + cap - 1) / cap;
  }
  if (total > HD_SMS_MAX_PARTS) {
    WHY("payload needs more than 255 SMS parts");
    return HD_ETOOBIG;
  }
  hd_sms_part_t *parts = calloc(total, sizeof *parts);
  if (!parts)
    return HD_ENOMEM;
  for (size_t i = 0; i < total; i++) {
    hd_sms_part_t *p = &parts[i];
    p->data_coding = HD_SMS_DCS_BINARY;
    p->seq = (uint8_t)(i + 1);
    p->total = (uint8_t)total;
    if (ports || total > 1) {
      p->udh_len = 1; /* the UDHL octet, written once the IEs are in */
      if (ports) {
        /* Port IE first, as Kannel does (PROTOCOLS.md §2.1); TS 23.040 §9.2.3.24.4. */
        uint8_t *u = p->sm + p->udh_len;
        u[0] = 0x05;
        u[1] = 0x04;
        u[2] = (uint8_t)(ports->dst >> 8);
        u[3] = (uint8_t)ports->dst;
        u[4] = (uint8_t)(ports->src >> 8);
        u[5] = (uint8_t)ports->src;
        p->udh_len += 6;
      }
      if (total > 1)
        put_concat_udh(p, ref, (unsigned)total, (unsigned)i + 1);
      p->sm[0] = (uint8_t)(p->udh_len - 1);
      p->esm_class = HD_SMS_ESM_UDHI;
    }
    size_t off = i * cap;
    size_t n = len - off < cap ? len - off : cap;
    if (n)
      memcpy(p->sm + p->udh_len, data + off, n);
    p->sm_len = (uint16_t)(p->udh_len + n);
    p->units = (uint16_t)n;
  }
  out->part = parts;
  out->n = (unsigned)total;
  return 0;
}

/* ---- decoding ---- */

int hd_sms_udh_parse(const uint8_t *sm, size_t len, hd_sms_udh_info_t *info) {
  memset(info, 0, sizeof *info);
  if (len < 1 || (size_t)sm[0] + 1 > len)
    return HD_EINVAL;
  size_t end = (size_t)sm[0] + 1;
  for (size_t i = 1; i < end;) {
    if (i + 2 > end)
      return HD_EINVAL;
    uint8_t iei = sm[i], iedl = sm[i + 1];
    const uint8_t *v = sm + i + 2;
    if (i + 2 + iedl > end)
      return HD_EINVAL;
    if (iei == 0x00 && iedl == 3) {
      info->has_concat = 1;
      info->concat_ref = v[0];
      info->concat_total = v[1];
      info->concat_seq = v[2];
    } else if (iei == 0x08 && iedl == 4) {
      info->has_concat = 1;
      info->concat_ref = (uint16_t)(v[0] << 8 | v[1]);
      info->concat_total = v[2];
      info->concat_seq = v[3];
    } else if (iei == 0x05 && iedl == 4) {
      info->has_ports = 1;
      info->dst_port = (uint16_t)(v[0] << 8 | v[1]);
      info->src_port = (uint16_t)(v[2] << 8 | v[3]);
    } else if (iei == 0x04 && iedl == 2) {
      info->has_ports = 1;
      info->dst_port = v[0];
      info->src_port = v[1];
    }
    i += 2 + (size_t)iedl;
  }
  info->udh_len = (uint8_t)end;
  return 0;
}

static uint32_t gsm_ext_cp(uint8_t septet) {
  for (size_t i = 0; i < GSM_EXT_N; i++)
    if (gsm_ext[i].septet == septet)
      return gsm_ext[i].cp;
  /* Unknown extension code: show the default-table character (TS 23.038 §6.2.1.1). */
  return gsm_basic[septet];
}

int hd_sms_decode(const uint8_t *sm, size_t len, uint8_t data_coding, uint8_t esm_class,
                  char **out, size_t *out_len, hd_sms_udh_info_t *udh, const char **why) {
  *out = NULL;
  *out_len = 0;
  hd_sms_udh_info_t local;
  if (!udh)
    udh = &local;
  memset(udh, 0, sizeof *udh);
  if (!sm && len) {
    WHY("short_message is NULL");
    return HD_EINVAL;
  }
  if (esm_class & HD_SMS_ESM_UDHI) {
    if (hd_sms_udh_parse(sm, len, udh)) {
      WHY("malformed user data header");
      return HD_EINVAL;
    }
    sm += udh->udh_len;
    len -= udh->udh_len;
  }
  enum { GSM, ASCII, LATIN1, UCS2 } kind;
  if (data_coding == HD_SMS_DCS_GSM7 || (data_coding >= 0xF0 && data_coding <= 0xF3))
    kind = GSM;
  else if (data_coding == HD_SMS_DCS_ASCII)
    kind = ASCII;
  else if (data_coding == HD_SMS_DCS_LATIN1)
    kind = LATIN1;
  else if (data_coding == HD_SMS_DCS_UCS2)
    kind = UCS2;
  else {
    WHY("data_coding is not a text coding");
    return HD_EINVAL;
  }
  /* Worst case 3 octets of UTF-8 per input octet (€ from 2 septets, U+FFFD from one). */
  char *o = malloc(len * 3 + 1);
  if (!o)
    return HD_ENOMEM;
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    uint8_t c = sm[i];
    switch (kind) {
    case GSM:
      c &= 0x7F;
      if (c == GSM_ESC && i + 1 < len)
        n += utf8_put(o + n, gsm_ext_cp(sm[++i] & 0x7F));
      else
        n += utf8_put(o + n, gsm_basic[c]);
      break;
    case ASCII:
      n += utf8_put(o + n, c < 0x80 ? c : 0xFFFD);
      break;
    case LATIN1:
      n += utf8_put(o + n, c);
      break;
    case UCS2: {
      if (i + 1 >= len) { /* a dangling odd octet */
        n += utf8_put(o + n, 0xFFFD);
        break;
      }
      uint32_t u = (uint32_t)(c << 8 | sm[i + 1]);
      i++;
      if (u >= 0xD800 && u <= 0xDBFF && i + 2 < len) {
        uint32_t lo = (uint32_t)(sm[i + 1] << 8 | sm[i + 2]);
        if (lo >= 0xDC00 && lo <= 0xDFFF) {
          n += utf8_put(o + n, 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00));
          i += 2;
          break;
        }
      }
      n += utf8_put(o + n, (u >= 0xD800 && u <= 0xDFFF) ? 0xFFFD : u);
      break;
    }
    }
  }
  o[n] = '\0';
  *out = o;
  *out_len = n;
  return 0;
}

/* ---- GSM 7-bit packing (TS 23.038 §6.1.2.1.1) ---- */

int hd_sms_gsm7_pack(const uint8_t *septets, size_t n, unsigned fill_bits, uint8_t *out,
                     size_t cap) {
  if (fill_bits > 6)
    return HD_EINVAL;
  size_t bits = fill_bits + n * 7;
  size_t octets = (bits + 7) / 8;
  if (octets > cap || octets > (size_t)INT32_MAX)
    return HD_ETOOBIG;
  memset(out, 0, octets);
  size_t bit = fill_bits;
  for (size_t i = 0; i < n; i++, bit += 7) {
    unsigned v = septets[i] & 0x7F;
    out[bit / 8] |= (uint8_t)(v << (bit % 8));
    if (bit % 8 > 1)
      out[bit / 8 + 1] |= (uint8_t)(v >> (8 - bit % 8));
  }
  return (int)octets;
}

int hd_sms_gsm7_unpack(const uint8_t *packed, size_t len, unsigned fill_bits, size_t n,
                       uint8_t *out, size_t cap) {
  if (fill_bits > 6 || (fill_bits + n * 7 + 7) / 8 > len)
    return HD_EINVAL;
  if (n > cap || n > (size_t)INT32_MAX)
    return HD_ETOOBIG;
  size_t bit = fill_bits;
  for (size_t i = 0; i < n; i++, bit += 7) {
    unsigned v = packed[bit / 8] >> (bit % 8);
    if (bit % 8 > 1)
      v |= (unsigned)packed[bit / 8 + 1] << (8 - bit % 8);
    out[i] = (uint8_t)(v & 0x7F);
  }
  return (int)n;
}
