// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Counts the system calls the sandbox's filter refused (SECURITY.md).
 *
 * aether_count_refusals (raw tracepoint sys_exit) runs at every system call's exit on the host
 * while it is attached (only with `confinement: true`): a call that returned EPERM, whose number
 * is one the filter refuses (refused_calls) and whose caller runs as a function's uid
 * (confined_uids), is counted per (uid, call) in refusals. A confined process's call of those
 * numbers never reaches the kernel's implementation: its EPERM is the filter's.
 *
 * Built by the BPFCompiler plugin during `swift build` and embedded in the binary. */
#include <linux/bpf.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#define EPERM 1

/* The kernel's x86-64 register frame; CO-RE places orig_ax (the system call number) by the
 * running kernel's BTF. */
struct pt_regs {
    unsigned long orig_ax;
} __attribute__((preserve_access_index));

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 512);
    __type(key, __u32);
    __type(value, __u8);
} refused_calls SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, __u8);
} confined_uids SEC(".maps");

/* Key: uid in the low 32 bits, system call number in the high 32. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u64);
    __type(value, __u64);
} refusals SEC(".maps");

SEC("raw_tp/sys_exit")
int aether_count_refusals(struct bpf_raw_tracepoint_args *ctx)
{
    if ((long)ctx->args[1] != -EPERM)
        return 0;
    __u32 uid = (__u32)bpf_get_current_uid_gid();
    if (!bpf_map_lookup_elem(&confined_uids, &uid))
        return 0;
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    __u32 number = (__u32)BPF_CORE_READ(regs, orig_ax);
    if (!bpf_map_lookup_elem(&refused_calls, &number))
        return 0;
    __u64 key = ((__u64)number << 32) | uid;
    __u64 *count = bpf_map_lookup_elem(&refusals, &key);
    if (count) {
        *count += 1;
    } else {
        __u64 one = 1;
        bpf_map_update_elem(&refusals, &key, &one, BPF_NOEXIST);
    }
    return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
