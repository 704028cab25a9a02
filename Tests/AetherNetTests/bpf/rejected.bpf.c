// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* A program the verifier must refuse (it reads a hash map value without checking the lookup for
 * NULL), so tests can see a rejection arrive as EbpfError.loadFailed with the verifier's log. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} verdicts SEC(".maps");

SEC("xdp")
int unchecked_lookup(struct xdp_md *ctx)
{
    __u32 zero = 0;
    __u64 *verdict = bpf_map_lookup_elem(&verdicts, &zero);
    return *verdict ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
