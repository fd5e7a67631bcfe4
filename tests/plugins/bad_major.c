/* A transport built for a future ABI major: the loader must refuse it and say why. */
#include <herald/transport.h>
static int c(const hd_host *h, hd_plugin *s, void **st) { return 0; }
static int go(void *s) { return 0; }
static void stop(void *s) {}
HD_TRANSPORT_EXPORT const hd_transport_ops herald_transport = {
    .abi_major = HD_TRANSPORT_ABI_MAJOR + 1, .abi_minor = 0,
    .struct_size = sizeof(hd_transport_ops), .name = "bad_major", .version = "0",
    .create = c, .start = go, .stop = stop, .destroy = stop};
