import AetherSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// The small rules `ConfigValidator` applies to single values: paths, addresses, environment
// names, handler programs, the warm pool, and key suggestions.

/// Path clean-up without touching the file system: drops `.` components, empty components and
/// `name/..` pairs, so `/etc/app/./h.py` and `/etc/app/x/../h.py` print as `/etc/app/h.py`.
enum LexicalPath {
    static func normalized(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..": if !parts.isEmpty { parts.removeLast() }
            default: parts.append(part)
            }
        }
        return "/" + parts.joined(separator: "/")
    }
}

/// `warm_pool_size` caps the restored instances kept running while idle, across all functions.
public enum WarmPool {
    /// How many restored idle instances the functions ask for (`min_warm` of snapshot functions).
    public static func demand(of functions: [FunctionConfig]) -> Int {
        functions.filter(\.snapshot).reduce(0) { $0 + $1.minWarm.rawValue }
    }
}

/// Paths of the orchestrator's Unix sockets, and their length limit.
public enum UnixSocketPath {
    /// `sun_path` holds 108 bytes including the terminating NUL.
    public static let maximumLength = 107

    /// The socket a function's handlers connect to (`AETHER_SOCKET`): next to the control socket,
    /// named for the orchestrator that owns it (`owner`, its PID), so an orchestrator and its
    /// successor (`aether restart`) never share one. Validation measures the longest PID.
    public static func handlerSocket(function: FunctionID, controlSocket: String, owner: Int32 = 4_194_304) -> String {
        let folder = controlSocket.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(
            separator: "/")
        return "\(folder)/fn-\(function.rawValue)-\(owner).sock"
    }
}

/// Textual IP addresses the gateway can bind.
enum IPAddressText {
    static func isValid(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }
}

/// Environment variable names the handler can receive unchanged.
enum EnvironmentName {
    static func isValid(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else {
            return false
        }
        return name.utf8.allSatisfy { byte in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "_")
        }
    }
}

/// Checks that a handler program can be started the way `aether up` will start it.
enum HandlerCheck {
    struct Problem {
        let expected: String
        let found: String
    }

    static func problem(with path: String) -> Problem? {
        var status = stat()
        do throws(SystemCallFailure) {
            try systemCall("stat", on: path, failsWith: .minusOne) { stat(path, &status) }
        } catch {
            return Problem(expected: "an existing handler program", found: "\(path): \(error.reason)")
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            return Problem(expected: "a regular file", found: "\(path), which is not a regular file")
        }
        if path.hasSuffix(".py") {
            // Run as `python3 path`: it only has to be readable.
            if access(path, R_OK) != 0 {
                return Problem(expected: "a readable Python file", found: "\(path), which cannot be read")
            }
        } else if access(path, X_OK) != 0 || status.st_mode & 0o111 == 0 {
            return Problem(
                expected: "an executable file (chmod +x), or a .py file run with python3",
                found: "\(path), which is not executable")
        }
        return nil
    }
}

/// What `requirements:` must name: a readable regular file of at most `maximumSize` bytes.
enum RequirementsCheck {
    /// A requirements file is a list of packages; anything bigger is not one.
    static let maximumSize = 1 << 20

    static func problem(with path: String) -> HandlerCheck.Problem? {
        var status = stat()
        do throws(SystemCallFailure) {
            try systemCall("stat", on: path, failsWith: .minusOne) { stat(path, &status) }
        } catch {
            return .init(expected: "an existing pip requirements file", found: "\(path): \(error.reason)")
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            return .init(expected: "a regular file", found: "\(path), which is not a regular file")
        }
        if access(path, R_OK) != 0 {
            return .init(expected: "a readable requirements file", found: "\(path), which cannot be read")
        }
        if Int(status.st_size) > maximumSize {
            return .init(
                expected: "a requirements file of at most \(maximumSize) bytes",
                found: "\(path), \(status.st_size) bytes")
        }
        return nil
    }
}

/// "Did you mean ...?" for misspelt keys: the allowed key within edit distance 2, if any.
enum KeySuggestion {
    static func closest(to word: String, among candidates: [String]) -> String? {
        let scored = candidates.map { ($0, distance(Array(word), Array($0))) }
        guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= 2 else { return nil }
        return best.0
    }

    private static func distance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        for (i, ca) in a.enumerated() {
            var current = [i + 1] + Array(repeating: 0, count: b.count)
            for (j, cb) in b.enumerated() {
                current[j + 1] = min(previous[j + 1] + 1, current[j] + 1, previous[j] + (ca == cb ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
