/* wap_codec.c — SI/SL validation, XML, WBXML (through libwbxml2), the WSP Push PDU and its SMS
 * parts. See wap_codec.h for the contract.
 *
 * Why libwbxml2 gets XML text rather than a tree: its public API converts text, and the text is
 * also what a PAP push to a real PPG carries, so the two can be compared. It was checked against
 * the SI spec's date rule (WAP-167 §9.2.2: OPAQUE, BCD, trailing zero octets dropped) and does it
 * right for full datetimes; it also accepts date-only and other partial forms, which is why every
 * date is validated here first (PROTOCOLS.md §2.5).
 */
#include "wap_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wbxml/wbxml.h>

#include "herald/error.h"

#define WHY(msg) (why ? (void)(*why = (msg)) : (void)0)
#define HREF_MAX 1024

/* ---- validation ---- */

/* An absolute http(s) URL with a host, in printable ASCII without the characters RFC 3986
 * never allows unescaped (space, "<>\^`{|}). */
static int check_href(const char *href, const char **why) {
  if (!href || !*href) {
    WHY("href is missing");
    return HD_EINVAL;
  }
  size_t n = strlen(href);
  if (n > HREF_MAX) {
    WHY("href is longer than 1024 octets");
    return HD_EINVAL;
  }
  size_t scheme;
  if (!strncmp(href, "http://", 7))
    scheme = 7;
  else if (!strncmp(href, "https://", 8))
    scheme = 8;
  else {
    WHY("href is not an absolute http:// or https:// URL");
    return HD_EINVAL;
  }
  char h = href[scheme];
  if (h == '\0' || h == '/' || h == '?' || h == '#' || h == ':' || h == '@') {
    WHY("href has no host");
    return HD_EINVAL;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)href[i];
    if (c <= 0x20 || c >= 0x7F || strchr("\"<>\\^`{|}", c)) {
      WHY("href contains a character that is not allowed in a URL (escape it with %XX)");
      return HD_EINVAL;
    }
  }
  return 0;
}

static int two(const char *s) { return (s[0] - '0') * 10 + (s[1] - '0'); }

/* "YYYY-MM-DDThh:mm:ssZ", UTC, a real calendar date (WAP-167 §9.2.1.1 takes ISO 8601 UTC). */
static int check_date(const char *d, const char *field_why, const char **why) {
  static const char pat[] = "DDDD-DD-DDTDD:DD:DDZ";
  if (strlen(d) != sizeof pat - 1)
    goto bad;
  for (size_t i = 0; pat[i]; i++) {
    if (pat[i] == 'D' ? (d[i] < '0' || d[i] > '9') : d[i] != pat[i])
      goto bad;
  }
  int year = two(d) * 100 + two(d + 2), mon = two(d + 5), day = two(d + 8);
  int hh = two(d + 11), mm = two(d + 14), ss = two(d + 17);
  static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mon < 1 || mon > 12 || day < 1 || day > mdays[mon - 1] || hh > 23 || mm > 59 || ss > 59)
    goto bad;
  int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (mon == 2 && day == 29 && !leap)
    goto bad;
  return 0;
bad:
  WHY(field_why);
  return HD_EINVAL;
}

/* Valid UTF-8 and only characters XML 1.0 can carry (§2.2 Char: no C0 controls but TAB, LF,
 * CR; no U+FFFE/U+FFFF). Surrogates and overlong forms are invalid UTF-8 already. */
static int check_xml_text(const char *s, const char *field_why, const char **why) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    unsigned char c = *p;
    uint32_t cp;
    size_t k;
    if (c < 0x80) {
      cp = c, k = 1;
    } else if ((c & 0xE0) == 0xC0) {
      cp = c & 0x1F, k = 2;
    } else if ((c & 0xF0) == 0xE0) {
      cp = c & 0x0F, k = 3;
    } else if ((c & 0xF8) == 0xF0) {
      cp = c & 0x07, k = 4;
    } else {
      goto bad;
    }
    for (size_t i = 1; i < k; i++) {
      if ((p[i] & 0xC0) != 0x80) /* also stops at the NUL */
        goto bad;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      goto bad;
    if ((cp < 0x20 && cp != 0x09 && cp != 0x0A && cp != 0x0D) || cp == 0xFFFE || cp == 0xFFFF)
      goto bad;
    p += k;
  }
  return 0;
bad:
  WHY(field_why);
  return HD_EINVAL;
}

int hd_wap_si_check(const hd_wap_si_t *si, const char **why) {
  if (!si) {
    WHY("no SI given");
    return HD_EINVAL;
  }
  if ((unsigned)si->action > HD_WAP_SI_DELETE) {
    WHY("unknown SI action");
    return HD_EINVAL;
  }
  int rc;
  if (si->action == HD_WAP_SI_DELETE && !si->href) {
    if (!si->si_id) {
      WHY("an SI with action delete needs an si-id or an href");
      return HD_EINVAL;
    }
  } else if ((rc = check_href(si->href, why))) {
    return rc;
  }
  if (si->si_id) {
    if (!*si->si_id) {
      WHY("si-id is empty");
      return HD_EINVAL;
    }
    if ((rc = check_xml_text(si->si_id, "si-id is not valid UTF-8 or has control characters",
                             why)))
      return rc;
  }
  if (si->text &&
      (rc = check_xml_text(si->text, "text is not valid UTF-8 or has control characters", why)))
    return rc;
  if (si->created &&
      (rc = check_date(si->created, "created is not a UTC date YYYY-MM-DDThh:mm:ssZ", why)))
    return rc;
  if (si->expires &&
      (rc = check_date(si->expires, "si-expires is not a UTC date YYYY-MM-DDThh:mm:ssZ", why)))
    return rc;
  return 0;
}

int hd_wap_sl_check(const hd_wap_sl_t *sl, const char **why) {
  if (!sl) {
    WHY("no SL given");
    return HD_EINVAL;
  }
  if ((unsigned)sl->action > HD_WAP_SL_CACHE) {
    WHY("unknown SL action");
    return HD_EINVAL;
  }
  return check_href(sl->href, why);
}

/* ---- XML ---- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_str(sbuf_t *b, const char *s) { sb_add(b, s, strlen(s)); }

/* Escapes the five XML specials, so a value can sit in text or in a double-quoted attribute. */
static void sb_esc(sbuf_t *b, const char *s) {
  for (; *s; s++) {
    switch (*s) {
    case '&': sb_str(b, "&amp;"); break;
    case '<': sb_str(b, "&lt;"); break;
    case '>': sb_str(b, "&gt;"); break;
    case '"': sb_str(b, "&quot;"); break;
    case '\'': sb_str(b, "&apos;"); break;
    default: sb_add(b, s, 1);
    }
  }
}

static void sb_attr(sbuf_t *b, const char *name, const char *value) {
  sb_str(b, " ");
  sb_str(b, name);
  sb_str(b, "=\"");
  sb_esc(b, value);
  sb_str(b, "\"");
}

static int sb_finish(sbuf_t *b, char **out, size_t *out_len) {
  if (b->oom) {
    free(b->p);
    return HD_ENOMEM;
  }
  *out = b->p;
  *out_len = b->len;
  return 0;
}

static const char *const si_actions[] = {
  [HD_WAP_SI_SIGNAL_NONE] = "signal-none", [HD_WAP_SI_SIGNAL_LOW] = "signal-low",
  [HD_WAP_SI_SIGNAL_MEDIUM] = "signal-medium", [HD_WAP_SI_SIGNAL_HIGH] = "signal-high",
  [HD_WAP_SI_DELETE] = "delete",
};
static const char *const sl_actions[] = {
  [HD_WAP_SL_EXECUTE_LOW] = "execute-low", [HD_WAP_SL_EXECUTE_HIGH] = "execute-high",
  [HD_WAP_SL_CACHE] = "cache",
};

int hd_wap_si_xml(const hd_wap_si_t *si, char **out, size_t *out_len, const char **why) {
  *out = NULL;
  *out_len = 0;
  int rc = hd_wap_si_check(si, why);
  if (rc)
    return rc;
  sbuf_t b = {0};
  sb_str(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
             "<!DOCTYPE si PUBLIC \"-//WAPFORUM//DTD SI 1.0//EN\" "
             "\"http://www.wapforum.org/DTD/si.dtd\">\n"
             "<si><indication");
  /* The attribute order of PROTOCOLS.md §2.4's example, so the bytes can be compared. */
  if (si->href)
    sb_attr(&b, "href", si->href);
  if (si->si_id)
    sb_attr(&b, "si-id", si->si_id);
  if (si->action != HD_WAP_SI_DEFAULT)
    sb_attr(&b, "action", si_actions[si->action]);
  if (si->created)
    sb_attr(&b, "created", si->created);
  if (si->expires)
    sb_attr(&b, "si-expires", si->expires);
  if (si->text && *si->text) {
    sb_str(&b, ">");
    sb_esc(&b, si->text);
    sb_str(&b, "</indication></si>\n");
  } else {
    sb_str(&b, "/></si>\n");
  }
  return sb_finish(&b, out, out_len);
}

int hd_wap_sl_xml(const hd_wap_sl_t *sl, char **out, size_t *out_len, const char **why) {
  *out = NULL;
  *out_len = 0;
  int rc = hd_wap_sl_check(sl, why);
  if (rc)
    return rc;
  sbuf_t b = {0};
  sb_str(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
             "<!DOCTYPE sl PUBLIC \"-//WAPFORUM//DTD SL 1.0//EN\" "
             "\"http://www.wapforum.org/DTD/sl.dtd\">\n"
             "<sl");
  sb_attr(&b, "href", sl->href);
  if (sl->action != HD_WAP_SL_DEFAULT)
    sb_attr(&b, "action", sl_actions[sl->action]);
  /* Self-closing: content (even whitespace) would make libwbxml emit 0xC5 instead of 0x85. */
  sb_str(&b, "/>\n");
  return sb_finish(&b, out, out_len);
}

/* ---- WBXML ---- */

/* WBXML 1.2, no string table, public id kept (from the DOCTYPE: SI 1.0 = 0x05, SL 1.0 = 0x06),
 * as Kannel emits and old handsets expect (PROTOCOLS.md §2.3, §2.5). */
static int compile(const char *xml, size_t xml_len, uint8_t public_id, uint8_t **out,
                   size_t *out_len, const char **why) {
  WBXMLConvXML2WBXML *conv = NULL;
  if (wbxml_conv_xml2wbxml_create(&conv) != WBXML_OK)
    return HD_ENOMEM;
  wbxml_conv_xml2wbxml_set_version(conv, WBXML_VERSION_12);
  wbxml_conv_xml2wbxml_disable_string_table(conv);
  WB_UTINY *wb = NULL;
  WB_ULONG wb_len = 0;
  WBXMLError err = wbxml_conv_xml2wbxml_run(conv, (WB_UTINY *)xml, (WB_ULONG)xml_len, &wb,
                                            &wb_len);
  wbxml_conv_xml2wbxml_destroy(conv);
  if (err != WBXML_OK) {
    free(wb);
    WHY("libwbxml2 could not encode the document");
    return err == WBXML_ERROR_NOT_ENOUGH_MEMORY ? HD_ENOMEM : HD_EINVAL;
  }
  /* The header is ours to guarantee: version 1.2, the public id, UTF-8, empty string table. */
  if (wb_len < 5 || wb[0] != 0x02 || wb[1] != public_id || wb[2] != 0x6A || wb[3] != 0x00) {
    free(wb);
    WHY("libwbxml2 produced an unexpected WBXML header");
    return HD_EINVAL;
  }
  *out = wb;
  *out_len = wb_len;
  return 0;
}

int hd_wap_si_wbxml(const hd_wap_si_t *si, uint8_t **out, size_t *out_len, const char **why) {
  *out = NULL;
  *out_len = 0;
  char *xml;
  size_t xml_len;
  int rc = hd_wap_si_xml(si, &xml, &xml_len, why);
  if (rc)
    return rc;
  rc = compile(xml, xml_len, 0x05, out, out_len, why);
  free(xml);
  return rc;
}

int hd_wap_sl_wbxml(const hd_wap_sl_t *sl, uint8_t **out, size_t *out_len, const char **why) {
  *out = NULL;
  *out_len = 0;
  char *xml;
  size_t xml_len;
  int rc = hd_wap_sl_xml(sl, &xml, &xml_len, why);
  if (rc)
    return rc;
  rc = compile(xml, xml_len, 0x06, out, out_len, why);
  free(xml);
  return rc;
}

/* ---- WSP connectionless Push PDU (WAP-230 §8.2.4.1, PROTOCOLS.md §2.2) ---- */

/* uintvar (WAP-230 §8.1.2): 7 bits per octet, most significant first, 0x80 = more follow. */
static size_t put_uintvar(uint8_t *o, uint32_t v) {
  uint8_t tmp[5];
  size_t n = 0;
  do {
    tmp[n++] = (uint8_t)(v & 0x7F);
    v >>= 7;
  } while (v);
  for (size_t i = 0; i < n; i++)
    o[i] = (uint8_t)(tmp[n - 1 - i] | (i + 1 < n ? 0x80 : 0));
  return n;
}

int hd_wap_push_pdu(const hd_wap_push_opts_t *opts, uint8_t content_type, const uint8_t *body,
                    size_t body_len, uint8_t **out, size_t *out_len) {
  *out = NULL;
  *out_len = 0;
  hd_wap_push_opts_t o = opts ? *opts : HD_WAP_PUSH_DEFAULTS;
  if (content_type >= 0x80 || o.app_id < HD_WAP_APP_NONE || o.app_id > 0x7F ||
      (!body && body_len))
    return HD_EINVAL;
  uint8_t headers[3];
  size_t hlen = 0;
  headers[hlen++] = (uint8_t)(0x80 | content_type); /* Content-Type as a short-integer */
  if (o.app_id != HD_WAP_APP_NONE) {
    headers[hlen++] = 0x80 | 0x2F;                   /* X-Wap-Application-Id */
    headers[hlen++] = (uint8_t)(0x80 | o.app_id);    /* its value as a short-integer */
  }
  uint8_t *p = malloc(2 + 5 + hlen + body_len);
  if (!p)
    return HD_ENOMEM;
  size_t n = 0;
  p[n++] = o.tid;
  p[n++] = 0x06; /* Push */
  n += put_uintvar(p + n, (uint32_t)hlen);
  memcpy(p + n, headers, hlen);
  n += hlen;
  if (body_len)
    memcpy(p + n, body, body_len);
  n += body_len;
  *out = p;
  *out_len = n;
  return 0;
}

/* ---- the whole stack as SMS ---- */

static int to_sms(const uint8_t *wbxml, size_t wbxml_len, uint8_t content_type,
                  const hd_wap_push_opts_t *opts, uint8_t ref, hd_sms_parts_t *out,
                  const char **why) {
  uint8_t *pdu;
  size_t pdu_len;
  int rc = hd_wap_push_pdu(opts, content_type, wbxml, wbxml_len, &pdu, &pdu_len);
  if (rc) {
    WHY("bad WSP push options (application id)");
    return rc;
  }
  /* WDP over SMS (WAP-259): destination 2948 = connectionless push, source 9200 = WSP. The
   * WSP PDU is what gets segmented, not the WBXML (PROTOCOLS.md §2.7). */
  const hd_sms_ports_t ports = {HD_SMS_PORT_WAP_PUSH, HD_SMS_PORT_WSP_CL};
  rc = hd_sms_split_binary(pdu, pdu_len, &ports, ref, out, why);
  free(pdu);
  return rc;
}

int hd_wap_si_sms(const hd_wap_si_t *si, const hd_wap_push_opts_t *opts, uint8_t ref,
                  hd_sms_parts_t *out, const char **why) {
  out->part = NULL;
  out->n = 0;
  uint8_t *wb;
  size_t wb_len;
  int rc = hd_wap_si_wbxml(si, &wb, &wb_len, why);
  if (rc)
    return rc;
  rc = to_sms(wb, wb_len, HD_WAP_CT_SIC, opts, ref, out, why);
  free(wb);
  return rc;
}

int hd_wap_sl_sms(const hd_wap_sl_t *sl, const hd_wap_push_opts_t *opts, uint8_t ref,
                  hd_sms_parts_t *out, const char **why) {
  out->part = NULL;
  out->n = 0;
  uint8_t *wb;
  size_t wb_len;
  int rc = hd_wap_sl_wbxml(sl, &wb, &wb_len, why);
  if (rc)
    return rc;
  rc = to_sms(wb, wb_len, HD_WAP_CT_SLC, opts, ref, out, why);
  free(wb);
  return rc;
}
