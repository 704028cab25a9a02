import Foundation

/// The orchestrator's YAML files that carry a JSON record in a comment (the desired state, a
/// function version): a marker first line says the file is ours, and one line starting with a
/// prefix holds the record. One reader for both, so they agree on what a damaged file is.
enum RecordLine {
    enum Failure: Error, Equatable {
        /// The first line is not the marker: not a file of ours.
        case notOurs
        /// No line starts with the prefix.
        case missing
        /// The record line is not the JSON the record type reads.
        case invalid(String)
    }

    /// The record in `bytes` (a whole file), looked for in its first `lines` lines.
    static func read<Record: Decodable>(
        _ type: Record.Type, in bytes: [UInt8], marker: String, prefix: String, lines: Int
    ) -> Result<Record, Failure> {
        let found = bytes.split(separator: UInt8(ascii: "\n"), maxSplits: lines, omittingEmptySubsequences: false)
        guard let first = found.first, first.starts(with: Array(marker.utf8)) else { return .failure(.notOurs) }
        let prefixBytes = Array(prefix.utf8)
        guard let line = found.first(where: { $0.starts(with: prefixBytes) }) else { return .failure(.missing) }
        do {
            return .success(try DesiredStateStore.decoder().decode(type, from: Data(line.dropFirst(prefixBytes.count))))
        } catch {
            return .failure(.invalid("\(error)"))
        }
    }
}
