import AetherCore
import AetherSystem
import CLibBPF
import Foundation
import Testing

@testable import AetherNet

/// The data plane loaded into the kernel for real. These tests attach programs to the network
/// namespace and to `lo`, so they run only inside a private network namespace
/// (`scripts/test.sh` runs them under `unshare -n`); in the host's namespace they are skipped.
@Suite(.serialized, .enabled(if: PrivateNetwork.isPrivate, "needs a private network namespace (unshare -n)"))
struct DataplaneTests {
    @Test func connectionToUnboundTriggerPortIsSteeredToTheSocket() throws {
        let steered = try SteeredPort()
        let client = try TCP.connect("127.0.0.1", steered.trigger)
        let accepted = try TCP.accept(steered.target)
        #expect(ListeningSocket.localPort(of: accepted.rawValue) == steered.trigger)
        try TCP.send(client, "ping")
        #expect(try TCP.receive(accepted, count: 4) == "ping")

        let status = steered.dataplane.status()
        let port = try #require(status.ports.first)
        #expect(port.port == steered.trigger && port.function == "f" && port.inSocketMap)
        #expect(port.steered == 1 && port.steerFailures == 0)
        #expect(status.links.map(\.program) == ["aether_dispatch"])
        #expect(status.links.allSatisfy { $0.linkID > 0 && $0.programID > 0 })
    }

    @Test func unmappedAndReleasedPortsAreRefused() throws {
        let steered = try SteeredPort()
        let unmapped = try ListeningSocket.freePort(address: "127.0.0.1")
        #expect(throws: TCP.Refused.self) { try TCP.connect("127.0.0.1", unmapped).close() }
        try TCP.connect("127.0.0.1", steered.trigger).close()
        try steered.dataplane.release(port: steered.trigger)
        #expect(throws: TCP.Refused.self) { try TCP.connect("127.0.0.1", steered.trigger).close() }
        #expect(steered.dataplane.status().ports.isEmpty)
    }

    @Test func onlyTheListenAddressIsSteered() throws {
        let steered = try SteeredPort()
        try TCP.connect("127.0.0.1", steered.trigger).close()
        // 127.0.0.2 is on lo too, but not the configured address.
        #expect(throws: TCP.Refused.self) { try TCP.connect("127.0.0.2", steered.trigger).close() }
    }

    @Test func aReservedPortCannotBeBoundByOthersAndIsStillSteered() throws {
        let steered = try SteeredPort()
        let (dataplane, trigger) = (steered.dataplane, steered.trigger)
        try dataplane.reserve(port: trigger)
        try dataplane.reserve(port: trigger)  // again: nothing changes
        #expect(throws: SystemCallFailure(call: "bind", subject: "127.0.0.1:\(trigger)", errno: EADDRINUSE)) {
            close(try ListeningSocket.open(address: "127.0.0.1", port: trigger))
        }
        try TCP.connect("127.0.0.1", trigger).close()
        try dataplane.release(port: trigger)
        close(try ListeningSocket.open(address: "127.0.0.1", port: trigger))
    }

    @Test func aPortHeldByAnotherSocketCannotBeReserved() throws {
        let dataplane = try EbpfDataplane(listenAddress: "127.0.0.1", xdp: nil)
        defer { dataplane.close() }
        let other = try ListeningSocket.open(address: "127.0.0.1", port: 0)
        defer { close(other) }
        let port = try #require(ListeningSocket.localPort(of: other))
        #expect(throws: SystemCallFailure(call: "bind", subject: "127.0.0.1:\(port)", errno: EADDRINUSE)) {
            try dataplane.reserve(port: port)
        }
    }

    /// The gateway's listeners: one per event loop in a SO_REUSEPORT group, the port steered to
    /// one of them. sk_lookup leaves the choice among the group to the kernel, so connections
    /// reach every member (each is accepted on the loop that serves it).
    @Test func aSteeredReusePortGroupSpreadsConnectionsOverEveryMember() throws {
        let dataplane = try EbpfDataplane(listenAddress: "127.0.0.1", xdp: nil)
        defer { dataplane.close() }
        let group = try ListeningSocket.openGroup(address: "127.0.0.1", count: 2)
        defer { group.forEach { close($0) } }
        #expect(group.count == 2)
        #expect(Set(group.map { ListeningSocket.localPort(of: $0) }).count == 1)
        let trigger = try ListeningSocket.freePort(address: "127.0.0.1")
        try dataplane.steer(port: trigger, function: "f", socket: group[0], owner: getpid(), kind: .gateway)
        var clients: [CInt] = []
        defer { clients.forEach { close($0) } }
        for _ in 0..<64 { clients.append(try TCP.connect("127.0.0.1", trigger).take()) }
        // Every connection completed its handshake: each waits in one member's accept queue.
        var accepted = [0, 0]
        for (index, listener) in group.enumerated() {
            while let connection = try? TCP.accept(listener, timeoutMilliseconds: 100) {
                #expect(ListeningSocket.localPort(of: connection.rawValue) == trigger)
                accepted[index] += 1
            }
        }
        #expect(accepted[0] + accepted[1] == 64)
        // By a hash of 64 different client ports: all on one member would be a 2^-63 chance.
        #expect(accepted[0] > 0 && accepted[1] > 0)
    }

    @Test func closingTheLastDescriptorOfTheSocketEmptiesTheMapEntry() throws {
        let dataplane = try EbpfDataplane(listenAddress: "127.0.0.1", xdp: nil)
        defer { dataplane.close() }
        let target = try ListeningSocket.open(address: "127.0.0.1", port: 0)
        let trigger = try ListeningSocket.freePort(address: "127.0.0.1")
        try dataplane.steer(port: trigger, function: "f", socket: target, owner: getpid(), kind: .handler)
        close(target)
        #expect(dataplane.status().ports.first?.inSocketMap == false)
        #expect(throws: TCP.Refused.self) { try TCP.connect("127.0.0.1", trigger).close() }
    }

    @Test func swappingSocketsUnderAConnectionLoopLosesNone() async throws {
        let dataplane = try EbpfDataplane(listenAddress: "127.0.0.1", xdp: nil)
        defer { dataplane.close() }
        let first = try ListeningSocket.open(address: "127.0.0.1", port: 0)
        let second = try ListeningSocket.open(address: "127.0.0.1", port: 0)
        defer {
            close(first)
            close(second)
        }
        let trigger = try ListeningSocket.freePort(address: "127.0.0.1")
        try dataplane.steer(port: trigger, function: "f", socket: first, owner: getpid(), kind: .handler)
        for socket in [first, second] {
            Thread.detachNewThread { TCP.acceptAndAnswer(socket) }
        }
        let attempts = 400
        let client = Task.detached { () -> (ok: Int, failures: [String]) in
            var ok = 0
            var failures: [String] = []
            for _ in 0..<attempts {
                do {
                    let connection = try TCP.connect("127.0.0.1", trigger)
                    if try TCP.receive(connection, count: 2) == "ok" { ok += 1 }
                } catch {
                    failures.append("\(error)")
                }
            }
            return (ok, failures)
        }
        var swaps = 0
        while swaps < 200 {
            try dataplane.steer(
                port: trigger, function: "f", socket: swaps % 2 == 0 ? second : first, owner: getpid(), kind: .handler)
            swaps += 1
            try await Task.sleep(for: .microseconds(200))
        }
        let result = await client.value
        #expect(result.failures.isEmpty)
        #expect(result.ok == attempts)
    }

    @Test func xdpCountsExactlyThePacketsSentToAPort() throws {
        let steered = try SteeredPort(xdp: XDPAttachment(interface: "lo", mode: .generic))
        let (dataplane, port) = (steered.dataplane, steered.trigger)
        #expect(dataplane.status().links.map(\.program) == ["aether_dispatch", "aether_xdp"])
        let other = try ListeningSocket.freePort(address: "127.0.0.1")

        let payload = [UInt8](repeating: 7, count: 100)
        for _ in 0..<37 { try UDP.send(payload, to: "127.0.0.1", port) }
        for _ in 0..<5 { try UDP.send(payload, to: "127.0.0.1", other) }
        let counted = try #require(dataplane.status().ports.first { $0.port == port })
        #expect(counted.packets == 37)
        // Ethernet 14 + IPv4 20 + UDP 8 + payload.
        #expect(counted.bytes == 37 * (14 + 20 + 8 + 100))
        #expect(dataplane.status().ports.count == 1)
    }

    @Test func xdpDropsNewConnectionsToADisabledPort() throws {
        let steered = try SteeredPort(xdp: XDPAttachment(interface: "lo", mode: .generic))
        let (dataplane, trigger) = (steered.dataplane, steered.trigger)
        let open = try TCP.connect("127.0.0.1", trigger)
        let accepted = try TCP.accept(steered.target)

        try dataplane.setDropsNewConnections(port: trigger, true)
        #expect(throws: TCP.TimedOut.self) { try TCP.connect("127.0.0.1", trigger, timeoutMilliseconds: 300).close() }
        #expect((dataplane.status().ports.first?.dropped ?? 0) >= 1)
        // The connection opened before still works.
        try TCP.send(open, "still")
        #expect(try TCP.receive(accepted, count: 5) == "still")

        try dataplane.setDropsNewConnections(port: trigger, false)
        try TCP.connect("127.0.0.1", trigger).close()
    }

    @Test func aSecondXDPAttachmentToTheSameInterfaceIsATypedError() throws {
        let first = try EbpfDataplane(listenAddress: "127.0.0.1", xdp: XDPAttachment(interface: "lo", mode: .generic))
        defer { first.close() }
        #expect {
            try EbpfDataplane(listenAddress: "127.0.0.1", xdp: XDPAttachment(interface: "lo", mode: .generic))
        } throws: { error in
            guard case .attachFailed(let program, let target, let reason) = error as? EbpfError else { return false }
            return program == "aether_xdp" && target.contains("lo") && reason.contains("busy")
        }
    }

    @Test func nativeXDPOnLoopbackAndUnknownInterfacesAreTypedErrors() throws {
        #expect {
            try EbpfDataplane(listenAddress: "127.0.0.1", xdp: XDPAttachment(interface: "lo", mode: .native))
        } throws: { error in
            guard case .attachFailed(let program, _, _) = error as? EbpfError else { return false }
            return program == "aether_xdp"
        }
        #expect {
            try EbpfDataplane(listenAddress: "127.0.0.1", xdp: XDPAttachment(interface: "nosuch0", mode: .generic))
        } throws: { error in
            error as? EbpfError
                == .attachFailed(
                    program: "aether_xdp", target: "interface nosuch0",
                    reason: "no such network interface in this namespace")
        }
    }

    @Test func detachingOnCloseLeavesNothingAttached() throws {
        let dataplane = try EbpfDataplane(
            listenAddress: "127.0.0.1", xdp: XDPAttachment(interface: "lo", mode: .generic))
        let ids = dataplane.status().links.map(\.linkID)
        #expect(ids.count == 2)
        #expect(Set(ids).isSubset(of: KernelLinks.ids()))
        dataplane.close()
        #expect(Set(ids).isDisjoint(with: KernelLinks.ids()))
        // The interface is free again.
        try EbpfDataplane(listenAddress: "127.0.0.1", xdp: XDPAttachment(interface: "lo", mode: .generic)).close()
    }
}

/// A loaded data plane with one trigger port (free a moment ago) steered to a listening socket
/// of ours; detached and closed when the test lets go of it.
final class SteeredPort {
    let dataplane: EbpfDataplane
    let target: CInt
    let trigger: UInt16

    init(xdp: XDPAttachment? = nil) throws {
        dataplane = try EbpfDataplane(listenAddress: "127.0.0.1", xdp: xdp)
        target = try ListeningSocket.open(address: "127.0.0.1", port: 0)
        trigger = try ListeningSocket.freePort(address: "127.0.0.1")
        try dataplane.steer(port: trigger, function: "f", socket: target, owner: getpid(), kind: .gateway)
    }

    deinit {
        close(target)
        dataplane.close()
    }
}

/// Not kernel state: runs anywhere.
struct EmbeddedObjectTests {
    @Test func verifierRejectionIsATypedErrorWithTheLog() throws {
        #expect {
            _ = try BPFObject(EmbeddedBPFObject(name: "rejected", base64: rejectedBPFObject))
        } throws: { error in
            guard case .loadFailed(let program, let reason, let log) = error as? EbpfError else { return false }
            // The kernel's words for an unchecked map lookup.
            return program == "unchecked_lookup" && reason.contains("refused")
                && log.contains("map_value_or_null")
        }
    }

    @Test func base64DecodingRoundTrips() {
        #expect(EmbeddedBPFObject(name: "x", base64: "").bytes == [])
        #expect(EmbeddedBPFObject(name: "x", base64: "AA==").bytes == [0])
        #expect(EmbeddedBPFObject(name: "x", base64: "AAE=").bytes == [0, 1])
        #expect(EmbeddedBPFObject(name: "x", base64: "AAEC\n/w==").bytes == [0, 1, 2, 255])
        // The embedded data plane is an ELF object.
        #expect(EmbeddedBPFObject.dataplane.bytes.prefix(4) == [0x7F, 0x45, 0x4C, 0x46])
    }
}
