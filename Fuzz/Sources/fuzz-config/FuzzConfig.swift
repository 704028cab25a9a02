import AetherCore
import CFuzzerDriver

/// Relative handler paths resolve against the repository's `examples/` folder, so that inputs
/// close to `examples/aetherless.yaml` (a seed) validate all the way to a configuration.
private let examples: String = {
    var path = #filePath
    for _ in 0..<4 { path = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)]) }
    return path + "/examples"
}()

/// One libFuzzer input: the bytes as a configuration file. Every outcome but a configuration or
/// a `ConfigError` (a trap, a hang, a crash in libyaml) is a finding, and so is a configuration
/// with two functions on one id or port, or a rejection without a problem in editor order.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    do throws(ConfigError) {
        let config = try ConfigLoader.parse(bytes: bytes, file: "fuzz.yaml", baseDirectory: examples)
        precondition(Set(config.functions.map(\.id)).count == config.functions.count, "two functions, one id")
        precondition(Set(config.functions.map(\.triggerPort.rawValue)).count == config.functions.count, "one port")
    } catch .invalid(_, let diagnostics) {
        precondition(!diagnostics.isEmpty, "rejected without a problem")
        let positions = diagnostics.map { [$0.line, $0.column] }
        precondition(positions.allSatisfy { $0[0] >= 1 && $0[1] >= 1 }, "a problem before line 1, column 1")
        precondition(positions == positions.sorted { $0.lexicographicallyPrecedes($1) }, "problems out of order")
    } catch {
        precondition(!error.description.isEmpty)
    }
    return 0
}

/// The program's entry point: SwiftPM links `main` to `fuzz_config_main`, which runs libFuzzer's
/// driver over `fuzzConfig`.
@_cdecl("fuzz_config_main")
public func fuzzConfigMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzConfig)
}
