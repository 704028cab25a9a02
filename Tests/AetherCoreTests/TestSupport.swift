import Foundation

/// Paths of the committed fixtures, found from this file's location so tests run from any
/// working directory.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static func bad(_ name: String) -> String { root.appendingPathComponent("bad/\(name)").path }
    static let handlers = root.appendingPathComponent("handlers").path
}

/// A private temporary folder removed when the test ends.
final class TemporaryDirectory {
    let path: String

    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("aether-test-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ name: String, _ text: String, executable: Bool = false) -> String {
        let file = "\(path)/\(name)"
        try! Data(text.utf8).write(to: URL(fileURLWithPath: file))
        if executable { try! FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: file) }
        return file
    }
}
