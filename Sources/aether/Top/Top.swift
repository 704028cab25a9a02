import AetherOrchestrator
import ArgumentParser
import CAetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Aether {
    struct Top: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A live view of the functions: instances, request rates, latencies, starts, queue, errors, eBPF.",
            discussion: """
                On a terminal the view is redrawn in place every --interval seconds: q quits; s, the keys 1 to 6 \
                or left/right change the sort column (name, req/s, p99, errors, queue, instances); up/down \
                select a function, Enter or i opens its instances, a letter opens the first function whose id \
                starts with it, Esc or b goes back. When stdout is not a terminal, each refresh prints one \
                line per function (key=value fields) instead. Request rates are the difference of the \
                invocation counters between two refreshes, so the first shows none.
                """)

        @Option(help: "Seconds between refreshes.")
        var interval: Double = 1

        @Option(help: "Stop after this many refreshes (default: until q, Ctrl-C or SIGTERM).")
        var count: Int?

        @OptionGroup var control: ControlOptions

        func validate() throws {
            guard interval.isFinite, interval >= 0.1, interval <= 3600 else {
                throw ValidationError("--interval must be between 0.1 and 3600 seconds, not \(interval)")
            }
            if let count, count < 1 {
                throw ValidationError("--count must be at least 1, not \(count)")
            }
        }

        func run() async throws {
            var model = TopModel()
            let feed = Feed(client: control.client, origin: .now)
            // The first document before anything is drawn: an orchestrator that does not answer
            // is reported as by every other control command.
            try controlRequest("top") { () throws(OrchestratorError) in try feed.refresh(&model) }
            if isatty(STDOUT_FILENO) == 1 && isatty(STDIN_FILENO) == 1 {
                try runOnTerminal(&model, feed: feed)
            } else {
                try runPlain(&model, feed: feed)
            }
        }

        /// Where the status documents come from, and the clock their rates are computed with.
        struct Feed {
            let client: ControlClient
            let origin: ContinuousClock.Instant

            func refresh(_ model: inout TopModel) throws(OrchestratorError) {
                let status = try client.status()
                model.update(status, seconds: Top.seconds(ContinuousClock.now - origin))
            }
        }

        /// One line per function per refresh.
        private func runPlain(_ model: inout TopModel, feed: Feed) throws {
            var ticks = 0
            while true {
                for line in model.plainLines(clock: Self.clock()) { print(line) }
                fflush(nil)
                ticks += 1
                if let count, ticks >= count { return }
                usleep(useconds_t(interval * 1_000_000))
                try controlRequest("top") { () throws(OrchestratorError) in try feed.refresh(&model) }
            }
        }

        /// The alternate screen, redrawn in place; keys without Enter; the terminal put back on
        /// every way out (q, a signal, an error).
        private func runOnTerminal(_ model: inout TopModel, feed: Feed) throws {
            let signals = aether_termination_pipe()
            var saved = [UInt8](repeating: 0, count: 256)
            let keysMode = saved.withUnsafeMutableBytes {
                aether_terminal_keys_mode(STDIN_FILENO, $0.baseAddress, UInt($0.count))
            }
            Self.emit("\u{1B}[?1049h\u{1B}[?25l")
            let failure = loop(&model, signals: signals, feed: feed)
            Self.emit("\u{1B}[?25h\u{1B}[?1049l")
            if keysMode == 0 {
                _ = saved.withUnsafeBytes { aether_terminal_restore(STDIN_FILENO, $0.baseAddress, UInt($0.count)) }
            }
            if let failure {
                writeError("aether top: \(failure)")
                throw ExitCode.failure
            }
        }

        /// Redraws every interval and on every key until q, a signal, `--count` refreshes or a
        /// failed refresh (returned).
        private func loop(
            _ model: inout TopModel, signals: Int32, feed: Feed
        ) -> OrchestratorError? {
            let period = Duration.milliseconds(Int64(interval * 1000))
            var ticks = 1
            var next = ContinuousClock.now + period
            draw(model)
            while true {
                let wait = max(0, Self.seconds(next - ContinuousClock.now) * 1000)
                var fds = [
                    pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0),
                    pollfd(fd: signals, events: Int16(POLLIN), revents: 0),
                ]
                let ready = poll(&fds, nfds_t(signals >= 0 ? 2 : 1), Int32(wait.rounded(.up)))
                if ready > 0 && fds[1].revents != 0 { return nil }
                if ready > 0 && fds[0].revents != 0 {
                    var bytes = [UInt8](repeating: 0, count: 64)
                    let count = read(STDIN_FILENO, &bytes, bytes.count)
                    if count <= 0 { return nil }
                    for key in Self.keys(Array(bytes[..<count])) where !model.press(key) { return nil }
                    draw(model)
                    continue
                }
                if ContinuousClock.now < next { continue }
                do {
                    try feed.refresh(&model)
                } catch {
                    return error
                }
                draw(model)
                ticks += 1
                if let count, ticks >= count { return nil }
                next = ContinuousClock.now + period
            }
        }

        private func draw(_ model: TopModel) {
            var rows: Int32 = 24
            var columns: Int32 = 120
            if aether_terminal_size(STDOUT_FILENO, &rows, &columns) != 0 || rows <= 0 || columns <= 0 {
                (rows, columns) = (24, 120)
            }
            let lines = model.screen(width: Int(columns), height: Int(rows), clock: Self.clock())
            var frame = "\u{1B}[H"
            for (index, line) in lines.enumerated() {
                frame += line + "\u{1B}[K" + (index == lines.count - 1 ? "" : "\r\n")
            }
            frame += "\u{1B}[J"
            Self.emit(frame)
        }

        /// The keys in what one read returned (an arrow is ESC [ A..D; a lone ESC is Esc).
        static func keys(_ bytes: [UInt8]) -> [TopModel.Key] {
            var keys: [TopModel.Key] = []
            var index = 0
            while index < bytes.count {
                let byte = bytes[index]
                index += 1
                switch byte {
                case 0x1B:
                    if index < bytes.count, bytes[index] == UInt8(ascii: "[") || bytes[index] == UInt8(ascii: "O") {
                        let code = index + 1 < bytes.count ? bytes[index + 1] : 0
                        index += 2
                        switch code {
                        case UInt8(ascii: "A"): keys.append(.up)
                        case UInt8(ascii: "B"): keys.append(.down)
                        case UInt8(ascii: "C"): keys.append(.nextColumn)
                        case UInt8(ascii: "D"): keys.append(.previousColumn)
                        default: break
                        }
                    } else {
                        keys.append(.back)
                    }
                case UInt8(ascii: "q"), UInt8(ascii: "Q"), 0x03: keys.append(.quit)
                case UInt8(ascii: "s"): keys.append(.nextSort)
                case UInt8(ascii: "1")...UInt8(ascii: "6"):
                    if let column = TopModel.Column(rawValue: Int(byte - UInt8(ascii: "0"))) {
                        keys.append(.sort(column))
                    }
                case UInt8(ascii: "i"), 0x0D, 0x0A: keys.append(.open)
                case UInt8(ascii: "b"), 0x7F, 0x08: keys.append(.back)
                case UInt8(ascii: "k"): keys.append(.up)
                case UInt8(ascii: "j"): keys.append(.down)
                default:
                    let scalar = Unicode.Scalar(byte)
                    if byte < 0x80, Character(scalar).isLetter || Character(scalar).isNumber {
                        keys.append(.letter(Character(scalar)))
                    }
                }
            }
            return keys
        }

        static func seconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }

        private static func emit(_ text: String) {
            var text = text
            text.withUTF8 { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = write(STDOUT_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                    if written < 0 && errno == EINTR { continue }
                    if written <= 0 { return }
                    offset += written
                }
            }
        }

        /// The wall-clock time of day (UTC), HH:MM:SS.
        static func clock() -> String {
            var now = time(nil)
            var parts = tm()
            gmtime_r(&now, &parts)
            func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : String(value) }
            return "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
        }
    }
}
