import AetherOrchestrator

/// What `aether top` shows, as a value: the rows computed from two successive status documents
/// (request rates come from the difference of the counters), the sort column, the selected
/// function and whether its instances are open. No terminal, no clock: the command feeds it
/// documents with their time and keys, and prints what it renders.
struct TopModel {
    /// The columns the table can be sorted by (keys 1 to 6, `s` or left/right to change).
    enum Column: Int, CaseIterable {
        case name = 1
        case requests, p99, errors, queue, instances

        var title: String {
            switch self {
            case .name: "name"
            case .requests: "req/s"
            case .p99: "p99"
            case .errors: "errors"
            case .queue: "queue"
            case .instances: "instances"
            }
        }
    }

    /// One function's figures at the last refresh.
    struct Row: Equatable {
        var id: String
        var lifecycle: String
        var busy: Int
        var idle: Int
        var starting: Int
        /// Requests answered per second since the previous refresh (nil on the first, or after
        /// a redeploy reset the function's counters).
        var requestsPerSecond: Double?
        var invocations: Int
        var p50Milliseconds: Double?
        var p99Milliseconds: Double?
        var queue: Int
        var errors: Int
        var timeouts: Int
        var starts: [StartStats]
        /// The trigger port's eBPF counters (nil: `dataplane: sockets`).
        var steered: UInt64?
        /// Packets and dropped SYNs (nil without an XDP program).
        var packets: UInt64?
        var dropped: UInt64?
    }

    /// A key pressed, as `aether top` reads it.
    enum Key: Equatable {
        case quit
        case nextSort
        case sort(Column)
        case previousColumn
        case nextColumn
        case up
        case down
        case open
        case back
        /// A letter that is no command: opens the first function whose id starts with it.
        case letter(Character)
    }

    private(set) var rows: [Row] = []
    private(set) var status: OrchestratorStatus?
    var sort = Column.name
    /// The function the cursor is on.
    private(set) var selected: String?
    /// The function whose instances are shown (nil: the table of functions).
    private(set) var opened: String?
    private var previous: (status: OrchestratorStatus, seconds: Double)?

    init() {}

    // MARK: Input

    /// A new status document, read `seconds` after some fixed origin.
    mutating func update(_ status: OrchestratorStatus, seconds: Double) {
        let before = previous.map { previous in
            (
                Dictionary(previous.status.functions.map { ($0.id, $0.stats.invocations) }) { first, _ in first },
                seconds - previous.seconds
            )
        }
        rows = status.functions.map { function in
            let serving = function.instances.filter { $0.phase == "serving" }
            let port = status.ebpf?.ports.first { $0.port == UInt16(clamping: function.port) }
            let counting = status.ebpf?.links.contains { $0.program == "aether_xdp" } ?? false
            var rate: Double?
            if let (counts, elapsed) = before, elapsed > 0, let last = counts[function.id],
                function.stats.invocations >= last
            {
                rate = Double(function.stats.invocations - last) / elapsed
            }
            return Row(
                id: function.id, lifecycle: function.lifecycle, busy: serving.count { $0.inFlight > 0 },
                idle: serving.count { $0.inFlight == 0 },
                starting: function.instances.count { $0.phase == "starting" || $0.phase == "attaching" },
                requestsPerSecond: rate, invocations: function.stats.invocations,
                p50Milliseconds: function.stats.p50Milliseconds, p99Milliseconds: function.stats.p99Milliseconds,
                queue: function.queueDepth, errors: function.stats.errors, timeouts: function.stats.timeouts,
                starts: function.stats.starts, steered: port?.steered, packets: counting ? port?.packets : nil,
                dropped: counting ? port?.dropped : nil)
        }
        self.status = status
        previous = (status, seconds)
        if selected.map({ id in !rows.contains { $0.id == id } }) ?? true { selected = sortedRows.first?.id }
        if let opened, !rows.contains(where: { $0.id == opened }) { self.opened = nil }
    }

    /// Handles a key; false when it asks to quit.
    mutating func press(_ key: Key) -> Bool {
        let order = sortedRows.map(\.id)
        let position = selected.flatMap { order.firstIndex(of: $0) } ?? 0
        switch key {
        case .quit: return false
        case .nextSort: sort = Column(rawValue: sort.rawValue % Column.allCases.count + 1) ?? .name
        case .sort(let column): sort = column
        case .nextColumn: sort = Column(rawValue: sort.rawValue % Column.allCases.count + 1) ?? .name
        case .previousColumn:
            sort = Column(rawValue: (sort.rawValue + Column.allCases.count - 2) % Column.allCases.count + 1) ?? .name
        case .up: if !order.isEmpty { selected = order[max(0, position - 1)] }
        case .down: if !order.isEmpty { selected = order[min(order.count - 1, position + 1)] }
        case .open: opened = selected
        case .back: opened = nil
        case .letter(let letter):
            if let match = order.first(where: { $0.first == letter }) {
                selected = match
                opened = match
            }
        }
        return true
    }

    /// The rows in the chosen order: by name ascending, every other column largest first (ties by name).
    var sortedRows: [Row] {
        rows.sorted { a, b in
            func key(_ row: Row) -> Double {
                switch sort {
                case .name: 0
                case .requests: row.requestsPerSecond ?? -1
                case .p99: row.p99Milliseconds ?? -1
                case .errors: Double(row.errors)
                case .queue: Double(row.queue)
                case .instances: Double(row.busy + row.idle + row.starting)
                }
            }
            let (ka, kb) = (key(a), key(b))
            return ka != kb ? ka > kb : a.id < b.id
        }
    }

    // MARK: Output

    /// The full screen, one string per line, each cut to `width` columns.
    func screen(width: Int, height: Int, clock: String) -> [String] {
        var lines: [String] = []
        if let opened, let function = status?.functions.first(where: { $0.id == opened }) {
            lines = instanceScreen(function, clock: clock)
        } else {
            lines = functionScreen(clock: clock)
        }
        return lines.prefix(max(1, height)).map { String($0.prefix(max(1, width))) }
    }

    private func functionScreen(clock: String) -> [String] {
        let status = self.status
        var lines = [
            "aether top  \(clock)  \(rows.count) function(s), up \(Int(status?.uptimeSeconds ?? 0)) s, "
                + "dataplane \(status?.dataplane ?? "-")",
            "q quit  s/1-6/left/right sort (now: \(sort.title))  up/down select  Enter/i instances",
            "",
        ]
        var header = [
            "  FUNCTION", "LIFECYCLE", "BUSY", "IDLE", "STARTING", "REQ/S", "P50 MS", "P99 MS", "QUEUE", "ERRORS",
            "STARTS (KIND N P50 MS)", "STEERED", "PACKETS", "DROPPED",
        ]
        let sortedColumn: Int =
            switch sort {
            case .name: 0
            case .requests: 5
            case .p99: 7
            case .errors: 9
            case .queue: 8
            case .instances: 2
            }
        header[sortedColumn] += "*"
        let table = TextTable(
            header: header,
            rows: sortedRows.map { row in
                [
                    (row.id == selected ? "> " : "  ") + row.id, row.lifecycle, String(row.busy), String(row.idle),
                    String(row.starting), Self.rate(row.requestsPerSecond), Self.milliseconds(row.p50Milliseconds),
                    Self.milliseconds(row.p99Milliseconds), String(row.queue), String(row.errors),
                    Self.starts(row.starts),
                    row.steered.map(String.init) ?? "-", row.packets.map(String.init) ?? "-",
                    row.dropped.map(String.init) ?? "-",
                ]
            })
        lines += table.rendered.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        return lines
    }

    private func instanceScreen(_ function: FunctionStatus, clock: String) -> [String] {
        let row = rows.first { $0.id == function.id }
        var lines = [
            "aether top  \(clock)  function \(function.id): instances",
            "Esc/b back  q quit",
            "",
            "lifecycle \(function.lifecycle), state \(function.state), port \(function.port), "
                + "req/s \(Self.rate(row?.requestsPerSecond)), queue \(function.queueDepth), "
                + "errors \(function.stats.errors), timeouts \(function.stats.timeouts)",
            "starts: \(Self.starts(function.stats.starts))",
            "",
        ]
        let table = TextTable(
            header: [
                "INSTANCE", "PID", "PHASE", "ORIGIN", "IN FLIGHT", "SERVED", "STARTUP MS", "UPTIME S", "MEMORY MIB",
            ],
            rows: function.instances.map { instance in
                [
                    String(instance.number), String(instance.pid), instance.phase, instance.origin,
                    String(instance.inFlight), String(instance.served),
                    Self.milliseconds(instance.startupMilliseconds), String(Int(instance.uptimeSeconds)),
                    instance.memoryBytes.map { Self.decimal(Double($0) / 1_048_576, places: 1) } ?? "-",
                ]
            })
        lines += table.rendered.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        return lines
    }

    /// One line per function, for a pipe or a file (`key=value` fields).
    func plainLines(clock: String) -> [String] {
        sortedRows.map { row in
            "\(clock) function=\(row.id) lifecycle=\(row.lifecycle) busy=\(row.busy) idle=\(row.idle) "
                + "starting=\(row.starting) req_s=\(Self.rate(row.requestsPerSecond)) invocations=\(row.invocations) "
                + "p50_ms=\(Self.milliseconds(row.p50Milliseconds)) p99_ms=\(Self.milliseconds(row.p99Milliseconds)) "
                + "queue=\(row.queue) errors=\(row.errors) timeouts=\(row.timeouts) "
                + "starts=\(row.starts.isEmpty ? "-" : row.starts.map { "\($0.kind):\($0.count)" }.joined(separator: ",")) "
                + "steered=\(row.steered.map(String.init) ?? "-") packets=\(row.packets.map(String.init) ?? "-") "
                + "dropped=\(row.dropped.map(String.init) ?? "-")"
        }
    }

    // MARK: Numbers

    static func rate(_ value: Double?) -> String {
        value.map { decimal($0, places: 1) } ?? "-"
    }

    static func milliseconds(_ value: Double?) -> String {
        value.map { decimal($0, places: $0 < 10 ? 2 : 1) } ?? "-"
    }

    static func starts(_ starts: [StartStats]) -> String {
        starts.isEmpty
            ? "-"
            : starts.map { "\($0.kind) \($0.count) \(milliseconds($0.p50Milliseconds))" }.joined(separator: ", ")
    }

    /// `value` with `places` decimals, without Foundation's formatter.
    static func decimal(_ value: Double, places: Int) -> String {
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let scaled = Int((value * scale).rounded())
        let whole = scaled / Int(scale)
        let fraction = abs(scaled % Int(scale))
        guard places > 0 else { return String(whole) }
        let digits = String(fraction)
        let sign = value < 0 && whole == 0 && scaled != 0 ? "-" : ""
        return sign + String(whole) + "." + String(repeating: "0", count: places - digits.count) + digits
    }
}
