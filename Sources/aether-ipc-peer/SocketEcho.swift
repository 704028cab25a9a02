import AetherSystem
import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

extension IPCPeer {
    /// Echo server over a Unix-domain or TCP loopback stream socket, the baselines the ring is
    /// measured against. Messages are framed `[u32 length][payload]`; length 0 ends the session.
    struct SocketEcho: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "socket-echo")
        @Option(help: "Unix socket path to listen on.") var unix: String?
        @Option(help: "TCP port on 127.0.0.1 to listen on.") var tcp: Int?

        func run() throws {
            let listener = try StreamSocket.listen(unixPath: unix, tcpPort: tcp)
            // With --tcp 0 the kernel picks the port; the client reads it from this line.
            say("READY port=\(StreamSocket.boundPort(listener.rawValue))")
            let accepted = try OwnedDescriptor("accept", on: "the listener") { accept(listener.rawValue, nil, nil) }
            let connection = accepted.rawValue
            StreamSocket.tuneForLatency(connection)
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var count = 0
            while true {
                var header: UInt32 = 0
                guard StreamSocket.readFully(connection, &header, 4) else { break }
                let length = Int(UInt32(littleEndian: header))
                let ok = buffer.withUnsafeMutableBytes { StreamSocket.readFully(connection, $0.baseAddress!, length) }
                guard ok else { break }
                buffer.withUnsafeBytes { bytes in
                    var frame = [UInt8](repeating: 0, count: 4 + length)
                    frame.withUnsafeMutableBytes { out in
                        out.storeBytes(of: header, as: UInt32.self)
                        out.baseAddress!.advanced(by: 4).copyMemory(from: bytes.baseAddress!, byteCount: length)
                    }
                    _ = frame.withUnsafeBytes { StreamSocket.writeFully(connection, $0.baseAddress!, $0.count) }
                }
                count += 1
                if length == 0 { break }
            }
            accepted.close()
            listener.close()
            if let unix { unlink(unix) }
            say("OK count=\(count) cpu_us=\(processCPUMicroseconds())")
        }
    }
}

/// Small blocking socket helpers shared by the echo server and the benchmark client.
enum StreamSocket {
    static func listen(unixPath: String?, tcpPort: Int?) throws -> OwnedDescriptor {
        if let unixPath {
            let socket = try OwnedDescriptor("socket", on: unixPath) {
                Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            }
            unlink(unixPath)
            try bindAndListen(socket, to: unixAddress(unixPath), subject: unixPath)
            return socket
        }
        guard let tcpPort else { throw ValidationError("give --unix or --tcp") }
        let socket = try OwnedDescriptor("socket", on: "127.0.0.1:\(tcpPort)") {
            Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        }
        var one: Int32 = 1
        setsockopt(socket.rawValue, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        try bindAndListen(socket, to: loopbackAddress(port: tcpPort), subject: "127.0.0.1:\(tcpPort)")
        return socket
    }

    private static func bindAndListen<Address>(
        _ socket: borrowing OwnedDescriptor, to address: Address, subject: String
    ) throws(SystemCallFailure) {
        try systemCall("bind", on: subject, failsWith: .minusOne) {
            withUnsafePointer(to: address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(socket.rawValue, $0, socklen_t(MemoryLayout<Address>.size))
                }
            }
        }
        try systemCall("listen", on: subject, failsWith: .minusOne) { Glibc.listen(socket.rawValue, 1) }
    }

    static func boundPort(_ fd: Int32) -> Int {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return ok == 0 && address.sin_family == sa_family_t(AF_INET) ? Int(UInt16(bigEndian: address.sin_port)) : 0
    }

    static func unixAddress(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
        }
        return address
    }

    static func loopbackAddress(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    static func tuneForLatency(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    static func readFully(_ fd: Int32, _ pointer: UnsafeMutableRawPointer, _ count: Int) -> Bool {
        var done = 0
        while done < count {
            let result = try? systemCall("read", on: "the connection", failsWith: .minusOne) {
                read(fd, pointer + done, count - done)
            }
            guard let result, result > 0 else { return false }
            done += result
        }
        return true
    }

    static func writeFully(_ fd: Int32, _ pointer: UnsafeRawPointer, _ count: Int) -> Bool {
        var done = 0
        while done < count {
            let result = try? systemCall("write", on: "the connection", failsWith: .minusOne) {
                write(fd, pointer + done, count - done)
            }
            guard let result, result > 0 else { return false }
            done += result
        }
        return true
    }
}
