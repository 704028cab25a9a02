import AetherCore
import Testing

@testable import AetherOrchestrator

@Suite struct FunctionStateTests {
    /// The seed's transition table, written out independently of the implementation.
    static let legal: Set<String> = [
        "Uninitialized>WarmSnapshot", "Uninitialized>Running", "WarmSnapshot>Running", "Running>Suspended",
        "Running>WarmSnapshot", "Suspended>Running", "Suspended>WarmSnapshot",
    ]

    static let allPairs: [(FunctionState, FunctionState)] = FunctionState.allCases.flatMap { from in
        FunctionState.allCases.map { (from, $0) }
    }

    @Test(arguments: allPairs)
    func everyPairFollowsTheSeedTable(from: FunctionState, to: FunctionState) throws {
        let isLegal = Self.legal.contains("\(from)>\(to)")
        #expect(from.canTransition(to: to) == isLegal)
        if isLegal {
            #expect(try from.transitioned(to: to) == to)
        } else {
            let error = #expect(throws: StateTransitionError.self) { try from.transitioned(to: to) }
            #expect(error?.from == from)
            #expect(error?.to == to)
        }
    }

    @Test func exactlySevenTransitionsAreLegal() {
        #expect(Self.allPairs.filter { $0.0.canTransition(to: $0.1) }.count == 7)
    }

    @Test func errorNamesFunctionStatesAndAlternatives() throws {
        let id = try FunctionID("thumbnail")
        let error = #expect(throws: StateTransitionError.self) {
            try FunctionState.warmSnapshot.transitioned(to: .suspended, function: id)
        }
        #expect(
            error?.description
                == "function thumbnail cannot go from WarmSnapshot to Suspended; from WarmSnapshot it may go to: Running"
        )
    }
}
