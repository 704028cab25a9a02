// `swift-peer PORT`: GET / answers {"hello":"world"} (application/json), POST / echoes its body
// (application/octet-stream), on 127.0.0.1:PORT. Hummingbird's defaults otherwise: one
// event loop per core, no request logging.
import Hummingbird
import Logging
import NIOCore

let port = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 18210 : 18210
let hello = ByteBuffer(string: #"{"hello":"world"}"#)

let router = Router()
router.get("/") { _, _ -> Response in
    Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: hello))
}
router.post("/") { request, _ -> Response in
    let body = try await request.body.collect(upTo: 1 << 20)
    return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: .init(byteBuffer: body))
}

var logger = Logger(label: "swift-peer")
logger.logLevel = .warning
let app = Application(
    router: router,
    configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: nil),
    logger: logger
)
try await app.runService()
