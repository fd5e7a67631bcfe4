/* A transport whose name differs from its file: refused so config sections cannot mismatch. */
#include <herald/transport.h>
static int c(const hd_host *h, hd_plugin *s, void **st) { return 0; }
static int go(void *s) { return 0; }
static void stop(void *s) {}
HD_TRANSPORT_EXPORT const hd_transport_ops herald_transport = {
    .abi_major = HD_TRANSPORT_ABI_MAJOR, .abi_minor = HD_TRANSPORT_ABI_MINOR,
    .struct_size = sizeof(hd_transport_ops), .name = "something_else", .version = "0",
    .create = c, .start = go, .stop = stop, .destroy = stop};
