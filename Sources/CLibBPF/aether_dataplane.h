/* The byte layout shared by the BPF programs (bpf/dataplane.bpf.c) and the orchestrator
 * (Sources/AetherNet): keys and values of every map. Plain UAPI types only, so both clang
 * -target bpf and the host compiler read it the same way. */
#ifndef AETHER_DATAPLANE_H
#define AETHER_DATAPLANE_H

#include <linux/types.h>

/* Entries of each per-port map: one per trigger port. */
#define AETHER_MAX_PORTS 4096

/* dispatch_sockets (SOCKHASH) key: the connection's IP protocol (IPPROTO_TCP) and local port,
 * host byte order. The value is a listening socket. */
struct aether_dispatch_key {
    __u32 protocol;
    __u32 port;
};

/* dispatch_settings (ARRAY, one entry at key 0). */
struct aether_dispatch_settings {
    /* Steer only connections to this IPv4 address (network byte order); 0 steers any
     * address, IPv4 or IPv6. */
    __u32 ipv4_address;
    __u32 reserved;
};

/* port_redirect_map (HASH, key: __u32 port in host byte order): the seed's port -> handler
 * table, read by the XDP program. */
struct aether_port_target {
    /* The process that answers the port (the orchestrator for sdk functions). */
    __u32 pid;
    /* The address the port is served on (network byte order; 0 = any). */
    __u32 ipv4_address;
    __u32 flags;
    __u32 reserved;
};

/* aether_port_target.flags: drop new connections (TCP SYN without ACK) at XDP, e.g. while a
 * function is drained or disabled. */
#define AETHER_PORT_DROP_NEW_CONNECTIONS 1u

/* port_counters (PERCPU_HASH, key: __u32 port): entries are created by the orchestrator when
 * a port is mapped; the programs only add to them. */
struct aether_port_counters {
    /* Packets and bytes (Ethernet frame length) to the port seen by XDP. */
    __u64 packets;
    __u64 bytes;
    /* New connections dropped at XDP (AETHER_PORT_DROP_NEW_CONNECTIONS). */
    __u64 dropped;
    /* New connections handed to the port's socket by sk_lookup. */
    __u64 steered;
    /* Lookups whose socket could not take the connection (e.g. an IPv6 connection for an
     * IPv4 socket); the kernel's normal lookup then decides. */
    __u64 steer_failures;
    /* SYNs dropped by sk_lookup because the port is held for a function with no socket to
     * take them yet (starting, or between a crash and its replacement): the client sends the
     * SYN again (after 1 s, 3 s, ...) and is served once the function is. */
    __u64 held;
};

#endif
