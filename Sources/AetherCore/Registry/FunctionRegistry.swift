import Synchronization

/// The functions the orchestrator knows, their configuration and their lifecycle state.
///
/// Shared by every task of the orchestrator; all reads and writes go through one mutex, and
/// every operation is a single critical section so that checks and updates cannot interleave
/// (registering checks id and port uniqueness and inserts atomically).
public final class FunctionRegistry: Sendable {
    /// A registered function as seen at one instant.
    public struct Entry: Sendable, Equatable {
        public let config: FunctionConfig
        public internal(set) var state: FunctionState

        public var id: FunctionID { config.id }
    }

    private let entries = Mutex<[FunctionID: Entry]>([:])

    public init() {}

    /// Adds a function in state `Uninitialized`.
    public func register(_ config: FunctionConfig) throws(RegistryError) {
        try entries.withLock { (entries: inout [FunctionID: Entry]) throws(RegistryError) in
            if entries[config.id] != nil { throw .duplicateFunction(config.id) }
            if let owner = entries.values.first(where: { $0.config.triggerPort == config.triggerPort }) {
                throw .portInUse(config.triggerPort, by: owner.id)
            }
            entries[config.id] = Entry(config: config, state: .uninitialized)
        }
    }

    /// Removes a function and returns what it was.
    @discardableResult
    public func unregister(_ id: FunctionID) throws(RegistryError) -> Entry {
        try entries.withLock { (entries: inout [FunctionID: Entry]) throws(RegistryError) in
            guard let removed = entries.removeValue(forKey: id) else { throw .unknownFunction(id) }
            return removed
        }
    }

    /// Moves a function to `next` if the lifecycle allows it; returns the state it left.
    @discardableResult
    public func transition(_ id: FunctionID, to next: FunctionState) throws(RegistryError) -> FunctionState {
        try entries.withLock { (entries: inout [FunctionID: Entry]) throws(RegistryError) in
            guard let entry = entries[id] else { throw .unknownFunction(id) }
            guard entry.state.canTransition(to: next) else {
                throw .illegalTransition(StateTransitionError(function: id, from: entry.state, to: next))
            }
            entries[id]?.state = next
            return entry.state
        }
    }

    public func entry(_ id: FunctionID) -> Entry? {
        entries.withLock { $0[id] }
    }

    public func entry(onPort port: Port) -> Entry? {
        entries.withLock { $0.values.first { $0.config.triggerPort == port } }
    }

    /// Every function, ordered by id.
    public var all: [Entry] {
        entries.withLock { $0.values.sorted { $0.id < $1.id } }
    }

    public var count: Int {
        entries.withLock { $0.count }
    }
}
