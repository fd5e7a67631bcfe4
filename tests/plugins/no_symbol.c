/* A shared object that is not a transport at all: no herald_transport symbol. */
__attribute__((visibility("default"))) int not_a_transport = 1;
