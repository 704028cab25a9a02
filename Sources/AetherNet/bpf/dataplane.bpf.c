// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The Aetherless data plane (docs: ARCHITECTURE.md, "eBPF data plane").
 *
 * - aether_dispatch (sk_lookup): every new connection or datagram lookup in the network
 *   namespace runs it once; if (protocol, local port) is a trigger port in dispatch_sockets,
 *   the connection goes to that listening socket, whatever port the socket is bound to.
 * - aether_xdp (XDP): counts packets and bytes per mapped destination port and can drop new
 *   connections to a port. XDP sees packets, not connections: it cannot deliver to a process.
 *
 * Built by the BPFCompiler plugin during `swift build` and embedded in the binary. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "aether_dataplane.h"

#define AF_INET 2

struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, AETHER_MAX_PORTS);
    __type(key, struct aether_dispatch_key);
    __type(value, __u64);
} dispatch_sockets SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct aether_dispatch_settings);
} dispatch_settings SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, AETHER_MAX_PORTS);
    __type(key, __u32);
    __type(value, struct aether_port_target);
} port_redirect_map SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(max_entries, AETHER_MAX_PORTS);
    __type(key, __u32);
    __type(value, struct aether_port_counters);
} port_counters SEC(".maps");

SEC("sk_lookup")
int aether_dispatch(struct bpf_sk_lookup *ctx)
{
    /* Another orchestrator's program, attached earlier, chose a socket already: during a
     * restart (`aether restart`) the old orchestrator serves until it detaches. */
    if (ctx->sk)
        return SK_PASS;
    __u32 zero = 0;
    struct aether_dispatch_settings *settings = bpf_map_lookup_elem(&dispatch_settings, &zero);
    if (settings && settings->ipv4_address != 0) {
        if (ctx->family != AF_INET || ctx->local_ip4 != settings->ipv4_address)
            return SK_PASS;
    }
    struct aether_dispatch_key key = {.protocol = ctx->protocol, .port = ctx->local_port};
    __u32 port = ctx->local_port;
    struct bpf_sock *sk = bpf_map_lookup_elem(&dispatch_sockets, &key);
    if (!sk) {
        if (ctx->protocol != IPPROTO_TCP || !bpf_map_lookup_elem(&port_redirect_map, &port))
            return SK_PASS; /* not a trigger port: the kernel's normal lookup */
        /* A trigger port whose function has no socket yet: the SYN goes to the port's hold
         * socket, whose socket filter discards it, so the client sends it again (held). Not
         * SK_DROP: the kernel answers a lookup that fails with a reset (refused). */
        struct aether_port_counters *held = bpf_map_lookup_elem(&port_counters, &port);
        if (held)
            held->held++;
        return SK_PASS;
    }
    long err = bpf_sk_assign(ctx, sk, 0);
    bpf_sk_release(sk);
    struct aether_port_counters *counters = bpf_map_lookup_elem(&port_counters, &port);
    if (counters) {
        if (err == 0)
            counters->steered++;
        else
            counters->steer_failures++;
    }
    return SK_PASS;
}

SEC("xdp")
int aether_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_PASS;

    __u8 protocol;
    void *transport;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end || ip->ihl < 5)
            return XDP_PASS;
        if (ip->frag_off & bpf_htons(0x1FFF))
            return XDP_PASS; /* a later fragment carries no ports */
        protocol = ip->protocol;
        transport = (void *)ip + ip->ihl * 4;
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end)
            return XDP_PASS;
        protocol = ip6->nexthdr; /* extension headers are not followed */
        transport = ip6 + 1;
    } else {
        return XDP_PASS;
    }

    __u16 destination;
    int opens_connection = 0;
    if (protocol == IPPROTO_TCP) {
        struct tcphdr *tcp = transport;
        if ((void *)(tcp + 1) > end)
            return XDP_PASS;
        destination = tcp->dest;
        opens_connection = tcp->syn && !tcp->ack;
    } else if (protocol == IPPROTO_UDP) {
        struct udphdr *udp = transport;
        if ((void *)(udp + 1) > end)
            return XDP_PASS;
        destination = udp->dest;
    } else {
        return XDP_PASS;
    }

    __u32 port = bpf_ntohs(destination);
    struct aether_port_target *target = bpf_map_lookup_elem(&port_redirect_map, &port);
    if (!target)
        return XDP_PASS;
    struct aether_port_counters *counters = bpf_map_lookup_elem(&port_counters, &port);
    if ((target->flags & AETHER_PORT_DROP_NEW_CONNECTIONS) && opens_connection) {
        if (counters)
            counters->dropped++;
        return XDP_DROP;
    }
    if (counters) {
        counters->packets++;
        counters->bytes += (__u64)(end - data);
    }
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
