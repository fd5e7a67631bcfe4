/* smpp_pool.h — the SMSC links of one heraldd, shared by the sms and wappush transports.
 *
 * One pool per process (the transports live in one shared object): created by whichever
 * transport's create() runs first, from the [smsc NAME] config sections, and freed by the last
 * hd_smpp_pool_release(). It owns:
 *   - one link per [smsc NAME]: one transceiver session, or a transmitter and a receiver
 *     session (smpp_session.h);
 *   - the queue of SMS parts waiting for a link, dispatched round-robin over the links a part
 *     may use that are bound and have room in their window, rate and throttle pauses allowing
 *     (failover: a link that is down simply takes nothing);
 *   - what the SMSCs send: delivery receipts (→ host->receipt with "<smsc>:<normalized id>")
 *     and mobile-originated messages (reassembled, decoded to UTF-8 → host->inbound);
 *   - the link metrics (registered through the first transport's plugin handle).
 *
 * A part is submitted, and ends in exactly one callback: HD_DELIVERED with the ref the SMSC
 * gave it (accepted by the SMSC; the handset's receipt comes later), HD_FAILED_TEMP or
 * HD_FAILED_PERM with a reason — unless it is withdrawn while still queued. Throttled parts
 * (ESME_RTHROTTLED, ESME_RMSGQFUL) are queued again at the front and sent once the link's
 * pause is over; a part whose link dropped before the SMSC answered fails temporarily, and the
 * broker resends the message.
 *
 * Ownership: the caller owns each hd_smpp_part; it must stay valid until its callback has run
 * or hd_smpp_pool_withdraw() returned 1. Loop thread only.
 */
#ifndef HD_SMPP_POOL_H
#define HD_SMPP_POOL_H

#include <herald/transport.h>
#include <stdint.h>

#include "smpp_session.h"

#define HD_SMPP_REF_MAX 140 /* "<smsc name>:<message id>" with its NUL */
#define HD_SMPP_MAX_LINKS 64

typedef struct hd_smpp_pool hd_smpp_pool;
typedef struct hd_smpp_user hd_smpp_user;
typedef struct hd_smpp_part hd_smpp_part;

/* outcome: HD_DELIVERED (ref set), HD_FAILED_TEMP or HD_FAILED_PERM (reason set). */
typedef void (*hd_smpp_part_cb)(void *ud, hd_smpp_part *pt, int outcome, const char *ref,
                                const char *reason);

struct hd_smpp_part {
  hd_smpp_submit sub;      /* the caller fills dest, validity, esm_class, data_coding, sm */
  uint64_t links;          /* bit i: link i may carry it; 0: any */
  uint64_t deadline;       /* uv_now() after which a part still queued fails (0: never) */
  hd_smpp_part_cb cb;
  void *ud;
  /* the pool's */
  hd_smpp_part *prev, *next;
  hd_smpp_user *user;
  int queued;
  int throttles;
};

/* Join the pool (creating it from the [smsc NAME] sections on first use) as one transport.
 * Returns 0, HD_ECONFIG (logged, naming the section and key) or HD_ENOMEM. */
int hd_smpp_pool_acquire(const hd_host *h, hd_plugin *p, hd_smpp_pool **pool,
                         hd_smpp_user **user);
/* Start the links (the first call does; later ones are no-ops). */
void hd_smpp_pool_start(hd_smpp_pool *pool);
/* The user stops: it will submit nothing more. The last one to stop unbinds every link. */
void hd_smpp_pool_stop(hd_smpp_pool *pool, hd_smpp_user *user);
/* Leave the pool (destroy); the last one frees it. After every user stopped and the loop
 * drained. */
void hd_smpp_pool_release(hd_smpp_pool *pool, hd_smpp_user *user);

/* The link mask for a config list of [smsc] names ("a, b"; NULL or "" or "*" = all). Returns
 * 0, or HD_ECONFIG with *bad set to the first unknown name (a pointer into a static buffer). */
int hd_smpp_pool_links(hd_smpp_pool *pool, const char *list, uint64_t *mask, const char **bad);

/* Queue a part and send it as soon as a link can. The part ends in one callback. */
void hd_smpp_pool_submit(hd_smpp_pool *pool, hd_smpp_user *user, hd_smpp_part *pt);
/* Take a queued part back: 1 if it was queued (no callback will come), 0 if it is already on
 * the wire (its callback will come). */
int hd_smpp_pool_withdraw(hd_smpp_pool *pool, hd_smpp_part *pt);

/* A fresh 8-bit concatenation reference: one counter for both transports, so two messages
 * to one handset never share one while both are being reassembled. */
uint8_t hd_smpp_pool_next_ref(hd_smpp_pool *pool);

/* Number of parts waiting for a link. */
size_t hd_smpp_pool_queued(const hd_smpp_pool *pool);

/* Durations in config values: "250ms", "2s", "1m", "1h", or a bare number of seconds
 * ("1.5"). Returns 0 or -1. */
int hd_smpp_parse_ms(const char *v, int64_t *out);

#endif
