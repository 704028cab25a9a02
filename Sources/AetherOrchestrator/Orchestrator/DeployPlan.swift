import AetherCore

/// What `aether deploy` does with each function of a file, decided without I/O: the file's
/// functions (with their handler files' digests) against the running generations.
struct DeployPlan: Equatable {
    struct Step: Equatable {
        enum Action: Equatable {
            /// Not running: started on its port (which nobody serves yet).
            case add
            /// A new generation starts beside the running one; the routes swap at the commit (on
            /// a port it moves to, nobody served before, it is routed while it starts).
            case replaceBeside
            /// The running generation must let go of the port before the new one can start: the
            /// protocol changes (the port moves between the gateway and a handler), or a process
            /// handler is involved without eBPF (it binds the trigger port itself).
            case replaceStoppingFirst
            /// Same configuration, same handler bytes, no `--force` (nor named in `replacing`):
            /// left alone.
            case keep
        }

        var config: FunctionConfig
        /// SHA-256 of the handler file now (nil: it could not be read).
        var handlerHash: String?
        var action: Action
        /// Running, and its handler file's bytes differ from those its generation started with.
        var handlerChanged: Bool

        var id: FunctionID { config.id }
    }

    /// In the file's order.
    var steps: [Step]

    /// What runs now: each function's configuration and the digest its handler had at start.
    struct Running {
        var config: FunctionConfig
        var handlerHash: String?
    }

    init(
        file functions: [FunctionConfig], hashes: [FunctionID: String?], running: [FunctionID: Running], force: Bool,
        replacing: Set<FunctionID> = [], ebpf: Bool
    ) {
        steps = functions.map { function in
            let hash = hashes[function.id] ?? nil
            guard let current = running[function.id] else {
                return Step(config: function, handlerHash: hash, action: .add, handlerChanged: false)
            }
            let handlerChanged = current.handlerHash != hash
            if current.config == function && !handlerChanged && !force && !replacing.contains(function.id) {
                return Step(config: function, handlerHash: hash, action: .keep, handlerChanged: false)
            }
            let protocolChanges = current.config.handlerProtocol != function.handlerProtocol
            let bindsPortItself =
                !ebpf && (current.config.handlerProtocol == .process || function.handlerProtocol == .process)
            return Step(
                config: function, handlerHash: hash,
                action: protocolChanges || bindsPortItself ? .replaceStoppingFirst : .replaceBeside,
                handlerChanged: handlerChanged)
        }
    }

    /// The steps that start a new generation, in the order they are started: first those that
    /// leave the running functions' traffic alone until the commit (added functions, sdk
    /// generations beside the old one), then process handlers beside the old one (with eBPF the
    /// trigger port follows a new handler as soon as it is READY, so an undo has to steer it
    /// back), and last those that stop the old generation first, so nothing is stopped unless
    /// everything else started.
    var startOrder: [Step] {
        func rank(_ step: Step) -> Int {
            switch step.action {
            case .add, .keep: 0
            case .replaceBeside: step.config.handlerProtocol == .sdk ? 0 : 1
            case .replaceStoppingFirst: 2
            }
        }
        return steps.filter { $0.action != .keep }.enumerated()
            .sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
    }

    /// The functions whose generation changes (added or replaced).
    var changed: Set<FunctionID> { Set(steps.filter { $0.action != .keep }.map(\.id)) }

    var result: DeployResult {
        DeployResult(
            added: steps.filter { $0.action == .add }.map(\.id.rawValue),
            replaced: steps.filter { $0.action == .replaceBeside || $0.action == .replaceStoppingFirst }.map(
                \.id.rawValue),
            unchanged: steps.filter { $0.action == .keep }.map(\.id.rawValue),
            handlerChanged: steps.filter { $0.action != .keep && $0.handlerChanged }.map(\.id.rawValue))
    }
}
