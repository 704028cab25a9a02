import CAetherSystem
import Glibc
import Testing

@testable import AetherOrchestrator

/// Request ids and W3C trace context (RequestIdentity): what a request without a trace gets,
/// and what one with a trace keeps. The headers on the wire are checked by
/// tests/integration/test_request_ids.py.
@Suite struct RequestIdentityTests {
    static let lowercaseHex = Set("0123456789abcdef")

    @Test func aRequestWithoutATraceGetsANewValidSampledTrace() throws {
        let identity = RequestIdentity(incoming: nil)
        #expect(identity.requestID.count == 32)
        #expect(identity.requestID.allSatisfy(Self.lowercaseHex.contains))
        // What any W3C propagator reads back: version 00, this trace id, a parent id, sampled.
        #expect(RequestIdentity.traceID(ofValid: identity.traceparent) == identity.requestID)
        let fields = identity.traceparent.split(separator: "-")
        #expect(fields.count == 4)
        #expect(fields.first == "00")
        #expect(fields.last == "01")
        #expect(fields[2].count == 16 && fields[2].allSatisfy(Self.lowercaseHex.contains))
    }

    @Test func everyNewTraceIsDifferent() {
        let identities = (0..<1000).map { _ in RequestIdentity(incoming: nil) }
        #expect(Set(identities.map(\.requestID)).count == identities.count)
        #expect(Set(identities.map(\.traceparent)).count == identities.count)
        // Every digit position varies: the random words are written out whole.
        for position in 0..<32 {
            let digits = Set(identities.map { Array($0.requestID)[position] })
            #expect(digits.count > 8, "digit \(position) of the trace id took only \(digits.sorted())")
        }
    }

    /// The random words come from a per-thread pool of one getrandom call; a forked child must
    /// not hand out the bytes its parent hands out next (it starts with an empty pool).
    @Test func aForkedChildDoesNotRepeatItsParentsRandomBytes() throws {
        var first = [UInt8](repeating: 0, count: 24)
        #expect(aether_random_bytes(&first, 24) == 24)  // the pool is filled now
        var pipe: [CInt] = [-1, -1]
        #expect(Glibc.pipe(&pipe) == 0)
        let child = fork()
        if child == 0 {
            var bytes = [UInt8](repeating: 0, count: 24)
            let given = aether_random_bytes(&bytes, 24)
            _ = Glibc.write(pipe[1], bytes, given == 24 ? 24 : 0)
            _exit(0)
        }
        #expect(child > 0)
        close(pipe[1])
        var parent = [UInt8](repeating: 0, count: 24)
        #expect(aether_random_bytes(&parent, 24) == 24)
        var fromChild = [UInt8](repeating: 0, count: 24)
        let read = Glibc.read(pipe[0], &fromChild, 24)
        close(pipe[0])
        var status: CInt = 0
        waitpid(child, &status, 0)
        #expect(read == 24)
        #expect(fromChild != parent)
        #expect(first != parent)
    }

    @Test func aValidIncomingTraceIsKept() {
        let incoming = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"
        let identity = RequestIdentity(incoming: incoming)
        #expect(identity.requestID == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(identity.traceparent == incoming.lowercased())
    }

    @Test func anInvalidIncomingTraceStartsANewOne() {
        let identity = RequestIdentity(incoming: "00-00000000000000000000000000000000-00f067aa0ba902b7-01")
        #expect(identity.requestID != "00000000000000000000000000000000")
        #expect(RequestIdentity.traceID(ofValid: identity.traceparent) == identity.requestID)
    }
}
