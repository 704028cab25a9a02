// A Swift SDK function: answers `GET /?name=x` with JSON, like examples/hello-python.
// Built by `swift build` as the `hello-swift` product; the example configuration points at it.
import AetherHandler

AetherHandler.run { request in
    .json(["hello": request.query["name"] ?? "world", "runtime": "swift"])
}
