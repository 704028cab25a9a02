#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The few protobuf messages of criu's RPC (rpc.proto of criu 4.1) we use, encoded by hand:
/// a RESTORE request and its response.
enum CriuRPC {
    static func restoreRequest(
        imagesDirectory: CInt, logFile: String, root: String? = nil, externals: [String] = [],
        inherit: [(key: String, fd: CInt)]
    ) -> [UInt8] {
        var options = Protobuf()
        options.varint(field: 1, UInt64(imagesDirectory))  // images_dir_fd
        options.varint(field: 9, 2)  // log_level: errors and warnings
        options.bytes(field: 10, Array(logFile.utf8))  // log_file, in the image folder
        if let root { options.bytes(field: 13, Array(root.utf8)) }  // root
        for external in externals { options.bytes(field: 37, Array(external.utf8)) }  // external
        options.varint(field: 26, 1)  // rst_sibling: the copy becomes our child
        for entry in inherit {
            var inherited = Protobuf()
            inherited.bytes(field: 1, Array(entry.key.utf8))
            inherited.varint(field: 2, UInt64(entry.fd))
            options.bytes(field: 27, inherited.buffer)  // inherit_fd
        }
        options.varint(field: 34, 0)  // manage_cgroups_mode = IGNORE
        var request = Protobuf()
        request.varint(field: 1, 2)  // type = RESTORE
        request.bytes(field: 2, options.buffer)
        return request.buffer
    }

    struct Response {
        var success = false
        var restoredPID: pid_t?
        var errorMessage: String?

        init(_ bytes: [UInt8]) {
            var reader = ProtobufReader(bytes[...])
            while let (field, value) = reader.next() {
                switch (field, value) {
                case (2, .varint(let flag)): success = flag != 0
                case (4, .bytes(let restore)):
                    var inner = ProtobufReader(restore)
                    while let (innerField, innerValue) = inner.next() {
                        if innerField == 1, case .varint(let pid) = innerValue {
                            restoredPID = pid_t(truncatingIfNeeded: pid)
                        }
                    }
                case (9, .bytes(let message)): errorMessage = String(decoding: message, as: UTF8.self)
                default: continue
                }
            }
        }
    }

    struct Protobuf {
        var buffer: [UInt8] = []

        mutating func varint(field: Int, _ value: UInt64) {
            appendVarint(UInt64(field << 3))
            appendVarint(value)
        }

        mutating func bytes(field: Int, _ value: [UInt8]) {
            appendVarint(UInt64(field << 3 | 2))
            appendVarint(UInt64(value.count))
            buffer += value
        }

        private mutating func appendVarint(_ value: UInt64) {
            var value = value
            while value >= 0x80 {
                buffer.append(UInt8(value & 0x7f) | 0x80)
                value >>= 7
            }
            buffer.append(UInt8(value))
        }
    }

    struct ProtobufReader {
        enum Value {
            case varint(UInt64)
            case bytes(ArraySlice<UInt8>)
        }

        var rest: ArraySlice<UInt8>

        init(_ bytes: ArraySlice<UInt8>) { rest = bytes }

        mutating func next() -> (Int, Value)? {
            guard let key = varint() else { return nil }
            let field = Int(key >> 3)
            switch key & 7 {
            case 0:
                return varint().map { (field, .varint($0)) }
            case 2:
                guard let length = varint(), length <= UInt64(rest.count) else { return nil }
                let value = rest.prefix(Int(length))
                rest = rest.dropFirst(Int(length))
                return (field, .bytes(value))
            case 5:
                guard rest.count >= 4 else { return nil }
                rest = rest.dropFirst(4)
                return next()
            case 1:
                guard rest.count >= 8 else { return nil }
                rest = rest.dropFirst(8)
                return next()
            default:
                return nil
            }
        }

        private mutating func varint() -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while let byte = rest.first {
                rest = rest.dropFirst()
                value |= UInt64(byte & 0x7f) << shift
                if byte < 0x80 { return value }
                shift += 7
                if shift > 63 { return nil }
            }
            return nil
        }
    }
}
