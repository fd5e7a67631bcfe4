/* A transport built against a newer minor than the broker has: refused. */
#include <herald/transport.h>
static int c(const hd_host *h, hd_plugin *s, void **st) { return 0; }
static int go(void *s) { return 0; }
static void stop(void *s) {}
HD_TRANSPORT_EXPORT const hd_transport_ops herald_transport = {
    .abi_major = HD_TRANSPORT_ABI_MAJOR, .abi_minor = HD_TRANSPORT_ABI_MINOR + 1,
    .struct_size = sizeof(hd_transport_ops), .name = "bad_minor", .version = "0",
    .create = c, .start = go, .stop = stop, .destroy = stop};
