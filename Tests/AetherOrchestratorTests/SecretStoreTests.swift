import AetherCore
import Foundation
import NIOCore
import NIOHTTP1
import Testing

@testable import AetherOrchestrator

/// A state folder removed when the test ends.
private final class StateFolder {
    let path: String

    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("aether-secrets-\(UUID().uuidString)").path
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    var store: SecretStore { SecretStore(stateDirectory: path) }
    var secrets: String { path + "/secrets" }

    func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1
    }
}

private func name(_ text: String) throws -> SecretName { try SecretName(text) }

private func function(
    _ id: String, secrets: [String] = [], auth: String? = nil
) throws -> FunctionConfig {
    FunctionConfig(
        id: try FunctionID(id), memoryLimit: try MemoryLimit(128), triggerPort: try Port(8080), handlerPath: "/h.py",
        timeout: try FunctionTimeout(1000), secrets: try secrets.map(SecretName.init),
        auth: try auth.map { FunctionConfig.Auth(secret: try SecretName($0)) })
}

@Suite struct SecretStoreTests {
    @Test func createListReadRemove() throws {
        let folder = StateFolder()
        let store = folder.store
        #expect(try store.list().isEmpty, "no folder yet: nothing stored")
        try store.create(try name("b-key"), contents: Array("token\n".utf8))
        try store.create(try name("a.key"), contents: [0, 1, 2, 255])
        #expect(try folder.mode(folder.path) == 0o700)
        #expect(try folder.mode(folder.secrets) == 0o700)
        #expect(try folder.mode(folder.secrets + "/b-key") == 0o600)
        let listed = try store.list()
        #expect(listed.map(\.name.rawValue) == ["a.key", "b-key"])
        #expect(listed.map(\.size) == [4, 6])
        #expect(listed.allSatisfy { abs($0.modified - Int(Date().timeIntervalSince1970)) < 60 })
        #expect(try store.contents(of: try name("a.key")) == [0, 1, 2, 255])

        #expect(throws: SecretStoreError.exists(try name("a.key"))) {
            try store.create(try name("a.key"), contents: [1])
        }
        try store.create(try name("a.key"), contents: Array("new".utf8), replacing: true)
        #expect(try store.contents(of: try name("a.key")) == Array("new".utf8))

        try store.remove(try name("a.key"))
        #expect(throws: SecretStoreError.unknown(try name("a.key"), folder: folder.secrets)) {
            try store.remove(try name("a.key"))
        }
        #expect(throws: SecretStoreError.unknown(try name("a.key"), folder: folder.secrets)) {
            try store.contents(of: try name("a.key"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.secrets) == ["b-key"])
    }

    @Test func contentsAreCheckedBeforeAnythingIsStored() throws {
        let folder = StateFolder()
        let store = folder.store
        let key = try name("k")
        for empty: [UInt8] in [[], [0x0A], [0x0D, 0x0A]] {
            #expect(throws: SecretStoreError.empty(source: "k")) { try store.create(key, contents: empty) }
        }
        let big = [UInt8](repeating: 7, count: SecretStore.maximumSize + 1)
        #expect(throws: SecretStoreError.tooLarge(source: "k", limit: 1_048_576)) {
            try store.create(key, contents: big)
        }
        #expect(try store.list().isEmpty)
        try store.create(key, contents: [UInt8](repeating: 7, count: SecretStore.maximumSize))
        #expect(try store.list().map(\.size) == [1_048_576])
    }

    @Test func sourcesAreReadBoundedAndChecked() throws {
        let folder = StateFolder()
        try FileManager.default.createDirectory(atPath: folder.path, withIntermediateDirectories: true)
        let file = folder.path + "/token"
        try Data("abc\n".utf8).write(to: URL(fileURLWithPath: file))
        #expect(try SecretStore.readSource(file) == Array("abc\n".utf8))
        #expect(throws: SecretStoreError.sourceUnreadable(source: folder.path, reason: "it is a directory")) {
            try SecretStore.readSource(folder.path)
        }
        #expect(
            throws: SecretStoreError.sourceUnreadable(
                source: folder.path + "/missing", reason: "No such file or directory")
        ) { try SecretStore.readSource(folder.path + "/missing") }
        #expect(throws: SecretStoreError.tooLarge(source: "/dev/zero", limit: 1_048_576)) {
            try SecretStore.readSource("/dev/zero")
        }
        #expect(throws: SecretStoreError.empty(source: "/dev/null")) { try SecretStore.readSource("/dev/null") }
    }

    /// A symbolic link in the store, or a store that is a link, is refused, never followed.
    @Test func linksAreRefused() throws {
        let folder = StateFolder()
        try folder.store.create(try name("real"), contents: [1])
        try FileManager.default.createSymbolicLink(
            atPath: folder.secrets + "/link", withDestinationPath: "/etc/hostname")
        #expect(throws: SecretStoreError.unsafe(path: folder.secrets + "/link", reason: "it is a symbolic link")) {
            try folder.store.contents(of: try name("link"))
        }
        #expect(try folder.store.list().map(\.name.rawValue) == ["real"])

        let other = StateFolder()
        try FileManager.default.createDirectory(atPath: other.path, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: other.secrets, withDestinationPath: folder.secrets)
        #expect(throws: SecretStoreError.self) { try other.store.list() }
        #expect(throws: SecretStoreError.self) { try other.store.create(try name("x"), contents: [1]) }
    }

    @Test func aLooseFolderIsTightened() throws {
        let folder = StateFolder()
        try FileManager.default.createDirectory(atPath: folder.secrets, withIntermediateDirectories: true)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: folder.secrets)
        try folder.store.create(try name("x"), contents: [1])
        #expect(try folder.mode(folder.secrets) == 0o700)
    }

    @Test func functionsNeedEverySecretTheyName() throws {
        let folder = StateFolder()
        let store = folder.store
        try store.create(try name("db"), contents: Array("pw".utf8))
        try store.create(try name("token"), contents: Array("t0k\r\n".utf8))
        let reader = try function("reader", secrets: ["db", "token"])
        let guarded = try function("guarded", auth: "token")
        let broken = try function("broken", secrets: ["db", "gone"], auth: "also-gone")
        try store.verify([reader, guarded])
        #expect(
            throws: SecretStoreError.missing(
                [
                    .init(function: try FunctionID("broken"), secret: try name("gone")),
                    .init(function: try FunctionID("broken"), secret: try name("also-gone")),
                ], folder: folder.secrets)
        ) { try store.verify([reader, broken]) }

        let staged = try store.handlerSecrets(of: reader)
        #expect(staged.map(\.name.rawValue) == ["db", "token"])
        #expect(staged.map(\.contents) == [Array("pw".utf8), Array("t0k\r\n".utf8)])
        #expect(try store.handlerSecrets(of: guarded).isEmpty, "the auth token is not the handler's")
        #expect(try store.bearerToken(of: reader) == nil)
        let token = try #require(try store.bearerToken(of: guarded))
        #expect(token.matches(Array("t0k".utf8)))
        #expect(!token.matches(Array("t0k\r\n".utf8)))
        #expect(throws: SecretStoreError.self) { try store.handlerSecrets(of: broken) }
    }

    /// No error of the store quotes a secret's contents.
    @Test func errorsNeverHoldContents() throws {
        let folder = StateFolder()
        let errors: [SecretStoreError] = [
            .invalidName("bad/\u{1}name"), .sourceUnreadable(source: "f", reason: "r"), .empty(source: "f"),
            .tooLarge(source: "f", limit: 1), .exists(try name("n")), .unknown(try name("n"), folder: folder.secrets),
            .missing([.init(function: try FunctionID("f"), secret: try name("n"))], folder: folder.secrets),
            .unsafe(path: "p", reason: "r"), .failed(what: "open p", reason: "r"),
        ]
        for error in errors { #expect(!error.description.isEmpty) }
        #expect(SecretStoreError.invalidName("bad/\u{1}name").description.contains("\"bad/?name\""))
    }
}

@Suite struct InvocationAuthTests {
    @Test func constantTimeEquality() {
        let secret = Array("correct horse battery staple".utf8)
        #expect(ConstantTime.equal(secret, secret))
        #expect(!ConstantTime.equal(secret, Array(secret.dropLast())))
        #expect(!ConstantTime.equal(secret, secret + [0]))
        #expect(!ConstantTime.equal(secret, []))
        #expect(!ConstantTime.equal(secret, secret.map { $0 ^ 1 }))
        var lastDiffers = secret
        lastDiffers[lastDiffers.count - 1] ^= 0x80
        #expect(!ConstantTime.equal(secret, lastDiffers))
        // A presented value that repeats the secret's last byte past its end must not match a prefix.
        #expect(!ConstantTime.equal(Array("aaaa".utf8), Array("aa".utf8)))
        #expect(!ConstantTime.equal(Array("ab".utf8), Array("abbbb".utf8)))
        #expect(ConstantTime.equal([0], [0]))
        #expect(!ConstantTime.equal([0], []))
        // Lengths that differ by a multiple of 256 (or more) still differ.
        #expect(!ConstantTime.equal([UInt8](repeating: 1, count: 256), [UInt8](repeating: 1, count: 512)))
    }

    @Test func bearerTokensDropOneLineBreak() {
        #expect(BearerToken(secretContents: Array("abc\n".utf8)).matches(Array("abc".utf8)))
        #expect(BearerToken(secretContents: Array("abc\r\n".utf8)).matches(Array("abc".utf8)))
        #expect(BearerToken(secretContents: Array("abc\n\n".utf8)).matches(Array("abc\n".utf8)))
        #expect(BearerToken(secretContents: Array("abc".utf8)).matches(Array("abc".utf8)))
        #expect(BearerToken(secretContents: Array("abc\r".utf8)).matches(Array("abc\r".utf8)))
        #expect(BearerToken(secretContents: Array("s3cret".utf8)).description == "BearerToken(6 bytes)")
    }

    @Test func headersAreChecked() throws {
        let token = BearerToken(secretContents: Array("s3cret\n".utf8))
        func check(_ values: [String]) -> InvocationAuth.Verdict {
            var headers = HTTPHeaders(values.map { ("Authorization", $0) })
            headers.add(name: "X-Other", value: "1")
            return InvocationAuth.check(headers, token: token)
        }
        #expect(check(["Bearer s3cret"]) == .allowed)
        #expect(check(["bearer s3cret"]) == .allowed)
        #expect(check(["BEARER   s3cret"]) == .allowed)
        #expect(check([]) == .noCredentials)
        #expect(check(["Basic s3cret"]) == .noCredentials)
        #expect(check(["s3cret"]) == .noCredentials)
        #expect(check(["Bearer"]) == .invalidToken)
        #expect(check(["Bearer "]) == .invalidToken)
        #expect(check(["Bearer s3cre"]) == .invalidToken)
        #expect(check(["Bearer s3cret "]) == .invalidToken)
        #expect(check(["Bearer s3cret", "Bearer s3cret"]) == .invalidToken)
        #expect(InvocationAuth.check(HTTPHeaders([("Authorization", "Bearer s3cret")]), token: nil) == .invalidToken)
    }

    @Test func refusalsCarryTheChallenge() throws {
        let id = try FunctionID("api")
        let none = InvocationAuth.refusal(.noCredentials, function: id)
        #expect(none.status == .unauthorized)
        #expect(none.headers["www-authenticate"] == ["Bearer realm=\"api\""])
        let wrong = InvocationAuth.refusal(.invalidToken, function: id)
        #expect(wrong.headers["www-authenticate"] == ["Bearer realm=\"api\", error=\"invalid_token\""])
        #expect(wrong.headers["content-type"] == ["application/json"])
        let body = String(buffer: try #require(wrong.body))
        #expect(body.hasPrefix("{\"error\":\"function api requires a valid bearer token"))
    }
}
