/* libbpf for Swift: the library's headers, the map layouts shared with the BPF programs, and
 * static inline wrappers for what Swift cannot import (LIBBPF_OPTS and composite macros). */
#ifndef AETHER_CLIBBPF_SHIM_H
#define AETHER_CLIBBPF_SHIM_H

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/if_link.h>

#include "aether_dataplane.h"

/* Opens an ELF object held in memory under a name (shown in bpftool and in errors). */
static inline struct bpf_object *aether_bpf_object_open_mem(const void *bytes, size_t size, const char *name)
{
    LIBBPF_OPTS(bpf_object_open_opts, options, .object_name = name);
    return bpf_object__open_mem(bytes, size, &options);
}

/* A bpf_link (the attachment goes away when its last descriptor closes, so a crashed owner
 * leaves nothing attached). Returns the link's descriptor or -errno. */
static inline int aether_bpf_link_create(int program_fd, int target_fd, enum bpf_attach_type type, __u32 flags)
{
    LIBBPF_OPTS(bpf_link_create_opts, options, .flags = flags);
    return bpf_link_create(program_fd, target_fd, type, &options);
}

static const __u32 AETHER_XDP_FLAGS_GENERIC = XDP_FLAGS_SKB_MODE;
static const __u32 AETHER_XDP_FLAGS_NATIVE = XDP_FLAGS_DRV_MODE;
static const enum bpf_attach_type AETHER_ATTACH_SK_LOOKUP = BPF_SK_LOOKUP;
static const enum bpf_attach_type AETHER_ATTACH_XDP = BPF_XDP;

#endif
