/* A transport whose create() refuses its config: the broker must not start. */
#include <herald/transport.h>
static int c(const hd_host *h, hd_plugin *s, void **st) {
  h->log(s, HD_LOG_ERROR, "refusing", "reason=%s", "test");
  return HD_ECONFIG;
}
static int go(void *s) { return 0; }
static void stop(void *s) {}
HD_TRANSPORT_EXPORT const hd_transport_ops herald_transport = {
    .abi_major = HD_TRANSPORT_ABI_MAJOR, .abi_minor = HD_TRANSPORT_ABI_MINOR,
    .struct_size = sizeof(hd_transport_ops), .name = "create_fails", .version = "0",
    .create = c, .start = go, .stop = stop, .destroy = stop};
