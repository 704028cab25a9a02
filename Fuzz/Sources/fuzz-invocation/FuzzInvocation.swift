import AetherIPC
import CFuzzerDriver

/// One libFuzzer input: the bytes as a request message and as a response message. Decoding must
/// either throw `InvocationFormatError` or give a message that encodes and decodes to itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzInvocation(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    if let request = try? InvocationRequest.decode(bytes) {
        let again = request.encoded().withUnsafeBytes { try? InvocationRequest.decode($0) }
        precondition(again == request, "a decoded request does not survive encode and decode")
    }
    if let view = try? InvocationResponseView(bytes) {
        let base = UInt(bitPattern: bytes.baseAddress)
        let body = UInt(bitPattern: view.body.baseAddress)
        precondition(view.body.isEmpty || (body >= base && body + UInt(view.body.count) <= base + UInt(size)))
        let response = InvocationResponse(
            id: view.id, status: view.status, headers: view.headers, body: Array(view.body))
        precondition((try? InvocationResponse.decode(bytes)) == response)
        let again = response.encoded().withUnsafeBytes { try? InvocationResponse.decode($0) }
        precondition(again == response, "a decoded response does not survive encode and decode")
    }
    return 0
}

/// The program's entry point: SwiftPM links `main` to `fuzz_invocation_main`, which runs libFuzzer's
/// driver over `fuzzInvocation`.
@_cdecl("fuzz_invocation_main")
public func fuzzInvocationMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzInvocation)
}
