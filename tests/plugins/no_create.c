/* A transport missing a required operation. */
#include <herald/transport.h>
static int go(void *s) { return 0; }
static void stop(void *s) {}
HD_TRANSPORT_EXPORT const hd_transport_ops herald_transport = {
    .abi_major = HD_TRANSPORT_ABI_MAJOR, .abi_minor = HD_TRANSPORT_ABI_MINOR,
    .struct_size = sizeof(hd_transport_ops), .name = "no_create", .version = "0",
    .create = 0, .start = go, .stop = stop, .destroy = stop};
