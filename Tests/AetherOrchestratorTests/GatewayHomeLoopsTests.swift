import AetherCore
import NIOCore
import NIOPosix
import Testing

@testable import AetherOrchestrator

/// Which event loops a trigger port's connections and its instances' response readers share
/// (Gateway, "Home loops"). That a function with one instance is served and read on one loop
/// end to end is what tests/integration (serving, instances, warm pool) exercise.
@Suite struct GatewayHomeLoopsTests {
    static func gateway(loops: Int) -> (Gateway, MultiThreadedEventLoopGroup) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: loops)
        return (Gateway(group: group, address: "127.0.0.1", clientTimeout: .standard), group)
    }

    @Test func aPortGetsOneLoopPerInstanceAtMostHalfTheLoops() async throws {
        let (gateway, group) = Self.gateway(loops: 8)
        #expect(gateway.homeLoops(port: 8001, instances: 1).count == 1)
        #expect(gateway.homeLoops(port: 8002, instances: 3).count == 3)
        #expect(gateway.homeLoops(port: 8003, instances: 10).count == 4)
        #expect(gateway.homeLoops(port: 8004, instances: 0).count == 1)
        try await group.shutdownGracefully()
        // On 2 cores (2 loops) every function has one.
        let (small, twoLoops) = Self.gateway(loops: 2)
        #expect(small.homeLoops(port: 8001, instances: 2).count == 1)
        try await twoLoops.shutdownGracefully()
    }

    @Test func portsTakeTheirFirstLoopInTurn() async throws {
        let (gateway, group) = Self.gateway(loops: 4)
        let first = gateway.homeLoops(port: 8001, instances: 1)[0]
        let second = gateway.homeLoops(port: 8002, instances: 1)[0]
        #expect(first !== second)
        let both = gateway.homeLoops(port: 8003, instances: 2)
        #expect(Set(both.map { ObjectIdentifier($0) }).count == 2)
        #expect(!both.contains { $0 === first || $0 === second })
        // Every loop taken once: the next port starts over.
        #expect(gateway.homeLoops(port: 8004, instances: 1)[0] === first)
        try await group.shutdownGracefully()
    }

    @Test func aPortKeepsItsLoopsUntilItIsClosed() async throws {
        let (gateway, group) = Self.gateway(loops: 4)
        let loops = gateway.homeLoops(port: 8001, instances: 1)
        _ = gateway.homeLoops(port: 8002, instances: 1)
        // A redeploy asks again, maybe with another max_instances: the port keeps its loops.
        let again = gateway.homeLoops(port: 8001, instances: 2)
        #expect(again.count == 1 && again[0] === loops[0])
        await gateway.close(port: 8001, dataplane: nil)
        #expect(gateway.homeLoops(port: 8001, instances: 2).count == 2)
        try await group.shutdownGracefully()
    }
}
